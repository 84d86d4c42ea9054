#!/usr/bin/env bash
# Start the HTTP service on a root folder, fit a model, classify, tag zero-shot, build and search an index.
# Usage: [PORT=8000] examples/serve.sh [ROOT]   (needs `pip install 'fewshot[serve]'`; listens on 127.0.0.1)
set -euo pipefail
ROOT=${1:-serve-root}
PORT=${PORT:-8000}
URL=http://127.0.0.1:$PORT
if curl -s -o /dev/null "$URL/"; then  # the calls below would go to that server and its root, not ours
  echo "something already answers on $URL: stop it, or run with PORT=<another port>" >&2
  exit 1
fi
fewshot serve --root "$ROOT" --port "$PORT" &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
until curl -sf "$URL/ready" >/dev/null; do
  if ! kill -0 "$SERVER" 2>/dev/null; then
    echo "the server did not start (see its error above)" >&2
    exit 1
  fi
  sleep 0.5
done

curl -s -X POST "$URL/v1/models/support" -H 'Content-Type: application/json' -d '{
  "inputs": ["my parcel never arrived", "where is my package", "I was charged twice", "please refund me"],
  "labels": ["shipping", "shipping", "billing", "billing"]}'
echo
curl -s -X POST "$URL/v1/models/support/predict" -H 'Content-Type: application/json' \
  -d '{"inputs": ["the delivery is late"]}'
echo
curl -s -X POST "$URL/v1/models/support/examples" -H 'Content-Type: application/json' \
  -d '{"inputs": ["the app crashes at login"], "labels": ["technical"]}'
echo
curl -s -X POST "$URL/v1/zeroshot" -H 'Content-Type: application/json' \
  -d '{"inputs": ["the team won the final"], "labels": ["sport", "politics", "technology"]}'
echo
created=$(curl -s -o /dev/null -w '%{http_code}' -X POST "$URL/v1/indexes/news" \
  -H 'Content-Type: application/json' -d '{"encoder": "text"}')
if [ "$created" = 201 ]; then  # a second run finds the index made by the first and adds nothing twice
  curl -s -X POST "$URL/v1/indexes/news/items" -H 'Content-Type: application/json' -d '{"items": [
    {"text": "The central bank raised interest rates", "label": "economy", "metadata": {"lang": "en"}},
    {"text": "The striker scored twice in the final", "label": "sport", "metadata": {"lang": "en"}}]}'
  echo
else
  echo "index news: HTTP $created on creating it (409: it exists already), its items kept as they are"
fi
curl -s -X POST "$URL/v1/indexes/news/search" -H 'Content-Type: application/json' \
  -d '{"queries": ["interest rates"], "k": 2, "where": {"lang": "en"}}'
echo
echo "open $URL/ in a browser to try the page; Ctrl-C to stop"
wait $SERVER
