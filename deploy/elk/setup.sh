#!/usr/bin/env bash
# Loads the ILM policy and index template into Elasticsearch and the saved objects into Kibana.
# Idempotent (PUT / overwrite=true). Run by the `elk-setup` compose service, or by hand with
# ELASTICSEARCH_URL and KIBANA_URL set.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
es="${ELASTICSEARCH_URL:-http://127.0.0.1:9200}"
kb="${KIBANA_URL:-http://127.0.0.1:5601}"

curl -fsS -X PUT "$es/_ilm/policy/xcagw-logs" -H 'Content-Type: application/json' \
  --data-binary "@$here/elasticsearch/ilm-policy.json" >/dev/null
curl -fsS -X PUT "$es/_index_template/xcagw-logs" -H 'Content-Type: application/json' \
  --data-binary "@$here/elasticsearch/index-template.json" >/dev/null
curl -fsS -X POST "$kb/api/saved_objects/_import?overwrite=true" -H 'kbn-xsrf: true' \
  --form "file=@$here/kibana/saved-objects.ndjson" >/dev/null
echo "elk-setup: ILM policy, index template and Kibana saved objects loaded"
