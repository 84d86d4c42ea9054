"""Request and response bodies of the HTTP service (pydantic models; every field documented in the OpenAPI)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

Label = Annotated[StrictStr | StrictInt, Field(description="A class label: a string or an integer.")]
# a saved model may hold labels of any JSON scalar type (a JSONL file fitted by the CLI: true/false, 1.5)
ModelLabel = Annotated[
    StrictStr | StrictBool | StrictInt | StrictFloat,
    Field(description="A class label of the model: a string, an integer, a boolean or a number."),
]
Number = StrictFloat | StrictInt
Inputs = Annotated[
    list[StrictStr],
    Field(
        min_length=1,
        description="Texts, or for an image model or index base64-encoded image files (PNG, JPEG, ...; a "
        "'data:image/...;base64,' prefix is allowed). At most the server's max_inputs per request.",
    ),
]
HeadName = Literal["prototype", "knn", "linear", "cache", "auto"]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Answer(BaseModel):
    warnings: list[str] = Field(
        default_factory=list,
        description="What the library warned of while doing this (say, two labels that differ only in case): "
        "done as asked, but probably not what was meant.",
    )


# -- errors and probes ------------------------------------------------------------------------------------
class ErrorDetail(BaseModel):
    code: str = Field(description="Machine-readable kind of error, e.g. bad_input, not_found, too_many_inputs.")
    message: str = Field(description="What is wrong, for a person.")
    field: str | None = Field(None, description="The request field at fault (e.g. 'inputs[2]', 'where', 'name').")


class ErrorResponse(BaseModel):
    error: ErrorDetail = Field(description="The error.")


class Health(BaseModel):
    status: Literal["ok"] = Field(description="Always 'ok': the process answers.")


class Ready(BaseModel):
    ready: bool = Field(description="Whether the server can serve requests now.")
    checks: dict[str, str] = Field(description="Each readiness check and its state ('ok' or why not).")


# -- models -----------------------------------------------------------------------------------------------
class ModelSummary(BaseModel):
    name: str = Field(description="The model's name (its folder under models/).")
    type: str = Field(
        description="'classifier' (few-shot), 'zeroshot' (a saved zero-shot classifier), or 'unreadable' (a damaged "
        "save, listed so that it can be deleted)."
    )
    loaded: bool = Field(description="Whether the server holds it in memory now.")
    created: str | None = Field(None, description="When the save was written (ISO 8601, UTC).")


class ModelList(BaseModel):
    models: list[ModelSummary] = Field(description="Every saved model under the root, by name.")


class ModelInfo(BaseModel):
    name: str = Field(description="The model's name.")
    type: str = Field(description="'classifier' or 'zeroshot'.")
    classes: list[ModelLabel] = Field(description="The labels it predicts; probabilities come in this order.")
    head: str = Field(description="The classifier head (prototype, knn, linear, cache, auto, zeroshot).")
    encoder: dict[str, Any] = Field(description="The encoder identity recorded in the save.")
    threshold: float | None = Field(description="The abstention threshold on the class score, or null.")


class FitRequest(Body):
    inputs: Inputs
    labels: list[Label] = Field(min_length=1, description="One label per input; at least two classes.")
    head: HeadName = Field("prototype", description="The classifier head.")
    head_params: dict[str, Any] | None = Field(None, description="Keyword arguments of the head, e.g. {'k': 5}.")
    abstain: Literal["auto"] | Number | None = Field(
        None, description="'none of these': null (always answer), 'auto' (from held-out scores), or a threshold."
    )
    calibrate: StrictBool = Field(True, description="Temperature-scale the probabilities on held-out examples.")
    lexical: StrictBool = Field(
        True,
        description="Text: pool the head with TF-IDF features of the words, at a weight chosen on held-out "
        "examples (0 where the words do not help; not used for images or with abstain set).",
    )
    encoder: StrictStr = Field(
        "text",
        description="Encoder spec: text (bundled MiniLM), text:onnx, text:onnx-int8 or static (faster CPU "
        "variants of it), image (bundled MobileNetV2), image:onnx, conse, or one the operator allowed with --encoder.",
    )


class ExamplesRequest(Body):
    inputs: Inputs
    labels: list[ModelLabel] = Field(
        min_length=1, description="One label per input, of the model's label type; a new label adds a class."
    )


class FitResponse(Answer):
    name: str = Field(description="The model's name.")
    classes: list[ModelLabel] = Field(description="Its classes after the change.")
    examples: int = Field(description="How many examples this request fitted or added.")


class DeleteResponse(BaseModel):
    name: str = Field(description="What was deleted.")
    deleted: bool = Field(description="True: it is gone from disk.")


class PredictRequest(Body):
    inputs: Inputs


class Prediction(BaseModel):
    # the names of the CLI's and the batch jobs' columns: score is the class score, probability the probability
    label: ModelLabel | None = Field(description="The predicted label; null where the model abstains.")
    score: float = Field(description="The best label's class score, the one the abstention threshold uses.")
    probability: float = Field(description="The best label's probability (also when abstaining).")
    probabilities: dict[str, float] = Field(
        description="Every label's probability (labels as strings, as JSON writes them); they sum to 1."
    )


class PredictResponse(Answer):
    predictions: list[Prediction] = Field(description="One prediction per input, in order.")


# -- zero-shot --------------------------------------------------------------------------------------------
class ZeroShotRequest(Body):
    inputs: Inputs
    labels: list[StrictStr] | dict[StrictStr, StrictStr | None] = Field(
        description="Label names, or name -> description (the description is what gets embedded; null: none)."
    )
    multi_label: StrictBool = Field(
        False,
        description="False: one label each (probabilities). True: tags, decided relative to the label set "
        "(the best label, or none where nothing fits), or by a fixed cosine with threshold.",
    )
    margin: Annotated[Number, Field(ge=0)] | None = Field(
        None,
        description="multi_label only: labels within this cosine of the best are tags too (default 0; refused "
        "otherwise, and with threshold).",
    )
    threshold: Number | None = Field(
        None, description="multi_label only: every label whose cosine reaches this is a tag (refused otherwise)."
    )
    top_k: Annotated[StrictInt, Field(ge=1)] | None = Field(
        None, description="multi_label only: at most this many tags per input (refused otherwise)."
    )
    abstain: Literal["auto"] | Number | None = Field(
        None,
        description="Single-label only (refused with multi_label): abstain (label null) when the best cosine is "
        "below this. 'auto' is refused with the reason: it needs unlabelled texts of the task, which a request "
        "does not carry.",
    )
    encoder: StrictStr = Field(
        "text",
        description="Encoder spec: text (or text:onnx, text:onnx-int8, static), or image/conse for base64 images.",
    )
    expand: Literal["auto", "none"] = Field(
        "auto",
        description="auto: widen each label name with the encoder's nearest vocabulary words (left out for "
        "images, labels with descriptions and names that hold one another); none: the label text alone.",
    )
    frame: StrictStr = Field(
        "auto",
        max_length=200,
        description="auto: each text is also read as 'Sentence: <text>' and the two embeddings summed (transformer "
        "text models only); none: as it is (half the encoding time); or a template with one {} for the text.",
    )
    pool: Literal["soft", "mean"] = Field(
        "soft",
        description="soft: a label scores the soft maximum of its prompts' cosines; mean: the cosine to their mean.",
    )


class Tag(BaseModel):
    label: str = Field(description="The label.")
    score: float = Field(description="Its cosine similarity to the input.")


class ZeroShotResult(BaseModel):
    label: str | None = Field(None, description="Single-label: the best label, null when abstaining or multi_label.")
    score: float | None = Field(None, description="Single-label: the best label's cosine (what abstain uses).")
    probability: float | None = Field(None, description="Single-label: the best label's probability.")
    probabilities: dict[str, float] | None = Field(None, description="Single-label: every label's probability.")
    tags: list[Tag] | None = Field(None, description="Multi-label: the labels that pass the threshold, best first.")


class ZeroShotResponse(Answer):
    predictions: list[ZeroShotResult] = Field(description="One result per input, in order.")


# -- indexes ----------------------------------------------------------------------------------------------
class IndexCreateRequest(Body):
    encoder: StrictStr = Field(
        "text",
        description="Encoder spec: text, text:onnx, text:onnx-int8, static, image, conse, or an operator-allowed one.",
    )
    kind: Literal["auto", "flat", "hnsw"] = Field("auto", description="FAISS structure (auto: flat, then HNSW).")


class IndexSummary(BaseModel):
    name: str = Field(description="The index's name (its folder under indexes/).")
    loaded: bool = Field(description="Whether the server holds it in memory now.")
    count: int | None = Field(None, description="Items in it: its last save and the writes journalled since.")
    unreadable: bool = Field(False, description="Its manifest cannot be read (a damaged save; a delete clears it).")


class IndexList(BaseModel):
    indexes: list[IndexSummary] = Field(description="Every saved index under the root, by name.")


class IndexInfo(BaseModel):
    name: str = Field(description="The index's name.")
    kind: str = Field(description="auto, flat or hnsw.")
    structure: str = Field(description="The FAISS structure in use now: flat or hnsw.")
    count: int = Field(description="Items in the index.")
    dim: int = Field(description="Vector dimension.")
    labels: int = Field(description="How many distinct labels the items carry.")
    fields: dict[str, list[str]] = Field(description="Metadata field -> the JSON kinds it holds.")
    removed_pending_compaction: int = Field(
        0,
        description="Removed items whose vectors an HNSW graph still holds: their ids can be added again after "
        "POST /v1/indexes/{name}/compact.",
    )
    encoder: dict[str, Any] | None = Field(description="The encoder identity.")
    writable: bool = Field(description="False when another process holds the folder (this server only reads).")


class Item(Body):
    id: Annotated[StrictInt, Field(ge=0, le=2**62)] | None = Field(
        None, description="Integer id; numbered automatically when left out."
    )
    text: StrictStr = Field(description="The text, or for an image index a base64-encoded image file.")
    label: Label | None = Field(None, description="A label to store and filter on.")
    metadata: dict[str, Any] | None = Field(None, description="JSON values to store and filter on (where).")


class AddItemsRequest(Body):
    items: list[Item] = Field(min_length=1, description="Items to add; stored whole or not at all.")


class AddItemsResponse(Answer):
    ids: list[int] = Field(description="The ids of the items, in order; durable when this answer is sent.")


class RemoveItemsRequest(Body):
    ids: list[Annotated[StrictInt, Field(ge=0)]] | None = Field(
        None, min_length=1, description="Ids to remove (with where: those of them that match it)."
    )
    where: dict[str, Any] | None = Field(
        None, description="Remove the items matching this filter (as a search's where); give ids, where, or both."
    )


class RemoveItemsResponse(BaseModel):
    removed: int = Field(description="How many items were removed (and are now gone, durably).")


class SearchRequest(Body):
    queries: Inputs
    k: Annotated[StrictInt, Field(ge=1, le=1000)] = Field(10, description="Hits per query.")
    where: dict[str, Any] | None = Field(
        None,
        description="Filter: field (label, id or a metadata key) -> value or list of values (any); fields "
        "combine with AND. A field no item has, or a value of a type the field never holds (3 where labels "
        "are strings), is an error; a value of the right type that no item holds matches nothing.",
    )
    query_type: Literal["auto", "text", "image"] = Field(
        "auto",
        description="How to read the queries: text, image (base64), or auto (text for text indexes; for image "
        "indexes a query that decodes as an image is an image, anything else text, as CLIP and ConSE allow).",
    )


class SearchHit(BaseModel):
    id: int = Field(description="The item's id.")
    score: float = Field(description="Cosine similarity to the query.")
    text: str | None = Field(description="The stored text (null for images).")
    label: Any = Field(description="The stored label, or null.")
    metadata: dict[str, Any] = Field(description="The stored metadata.")


class SearchResponse(BaseModel):
    results: list[list[SearchHit]] = Field(description="For each query, its hits, best first.")
