#!/usr/bin/env bash
# Start the HTTP service on a root folder, fit a model, classify, tag zero-shot, build and search an index.
# Usage: examples/serve.sh [ROOT]   (needs `pip install 'fewshot[serve]'`; listens on 127.0.0.1:8000)
set -euo pipefail
ROOT=${1:-serve-root}
URL=http://127.0.0.1:8000
fewshot serve --root "$ROOT" --port 8000 &
SERVER=$!
trap 'kill $SERVER' EXIT
until curl -sf "$URL/ready" >/dev/null; do sleep 0.5; done

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
curl -s -X POST "$URL/v1/indexes/news" -H 'Content-Type: application/json' -d '{"encoder": "text"}' >/dev/null
curl -s -X POST "$URL/v1/indexes/news/items" -H 'Content-Type: application/json' -d '{"items": [
  {"text": "The central bank raised interest rates", "label": "economy", "metadata": {"lang": "en"}},
  {"text": "The striker scored twice in the final", "label": "sport", "metadata": {"lang": "en"}}]}'
echo
curl -s -X POST "$URL/v1/indexes/news/search" -H 'Content-Type: application/json' \
  -d '{"queries": ["interest rates"], "k": 2, "where": {"lang": "en"}}'
echo
echo "open $URL/ in a browser to try the page; Ctrl-C to stop"
wait $SERVER
