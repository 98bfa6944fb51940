#!/usr/bin/env bash
# Deploys the inferscope image (./x image) to a Vertex AI endpoint with gcloud: push the image to
# Artifact Registry, upload it as a Model (custom container: ports, health and predict routes,
# optional model artifacts in gs:// that the container reads from AIP_STORAGE_URI), create an
# Endpoint, and deploy the Model to it (machine type, replicas, CPU autoscaling, optional GPU).
# Every command is printed before it runs; --dry-run prints them and runs nothing.
#
#   deploy/vertex/deploy.sh --project my-project --region europe-west4 --dry-run
#   deploy/vertex/deploy.sh --project my-project --region europe-west4 \
#       --artifact-uri gs://my-bucket/inferscope/models --min-replicas 1 --max-replicas 4
#   deploy/vertex/deploy.sh --project my-project --region us-central1 --gpu nvidia-l4 \
#       --machine-type g2-standard-8 --local-image localhost/inferscope:cuda
#
# Then point the page host's variants at the endpoint (docs/serving.md, "Remote variants"):
#   [variants.resnet50-int8]
#   backend = "vertex"; project = "…"; region = "…"; endpoint = "<ENDPOINT_ID>"
set -euo pipefail

usage() {
  sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
  cat <<'EOF'

Options (defaults in brackets):
  --project ID              Google Cloud project (required) [$CLOUDSDK_CORE_PROJECT]
  --region REGION           Vertex AI region [europe-west4]
  --local-image NAME        the image ./x image built [localhost/inferscope:latest]
  --repository NAME         Artifact Registry Docker repository, created if missing [inferscope]
  --image URI               the pushed image [REGION-docker.pkg.dev/PROJECT/REPOSITORY/inferscope:TAG]
  --no-push                 the image is already in the registry (--image)
  --artifact-uri GS_URI     models (labels.json, *.onnx) in Cloud Storage instead of those in the image
  --variant ID              variant :predict answers when the request names none [resnet50-int8]
  --model-name NAME         Model and Endpoint display name [inferscope]
  --machine-type TYPE       [n1-standard-4]
  --min-replicas N          [1]
  --max-replicas N          [2]
  --cpu-target PERCENT      autoscaling target CPU utilization [60]
  --gpu TYPE[:COUNT]        accelerator, e.g. nvidia-tesla-t4 or nvidia-l4:1 (use the cuda image)
  --dry-run                 print the commands, run nothing
EOF
}

# What the image does (Containerfile): HTTP on AIP_HTTP_PORT, which Vertex sets from --container-ports;
# Vertex also sets AIP_HEALTH_ROUTE and AIP_PREDICT_ROUTE from the routes given here.
PORT=8080
HEALTH_ROUTE=/health
PREDICT_ROUTE=/predict

PROJECT="${CLOUDSDK_CORE_PROJECT:-}" REGION=europe-west4 LOCAL_IMAGE=localhost/inferscope:latest
REPOSITORY=inferscope IMAGE="" PUSH=1 ARTIFACT_URI="" VARIANT=resnet50-int8 NAME=inferscope
MACHINE_TYPE=n1-standard-4 MIN_REPLICAS=1 MAX_REPLICAS=2 CPU_TARGET=60 GPU="" DRY_RUN=0
while [ $# -gt 0 ]; do
  case "$1" in
    --project) PROJECT="$2"; shift ;;
    --region) REGION="$2"; shift ;;
    --local-image) LOCAL_IMAGE="$2"; shift ;;
    --repository) REPOSITORY="$2"; shift ;;
    --image) IMAGE="$2"; shift ;;
    --no-push) PUSH=0 ;;
    --artifact-uri) ARTIFACT_URI="$2"; shift ;;
    --variant) VARIANT="$2"; shift ;;
    --model-name) NAME="$2"; shift ;;
    --machine-type) MACHINE_TYPE="$2"; shift ;;
    --min-replicas) MIN_REPLICAS="$2"; shift ;;
    --max-replicas) MAX_REPLICAS="$2"; shift ;;
    --cpu-target) CPU_TARGET="$2"; shift ;;
    --gpu) GPU="$2"; shift ;;
    --dry-run) DRY_RUN=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "deploy.sh: unknown option $1 (--help)" >&2; exit 2 ;;
  esac
  shift
done
[ -n "$PROJECT" ] || { echo "deploy.sh: --project is required (--help)" >&2; exit 2; }
[[ "$MIN_REPLICAS" =~ ^[0-9]+$ && "$MAX_REPLICAS" =~ ^[0-9]+$ && "$MIN_REPLICAS" -ge 1 && "$MAX_REPLICAS" -ge "$MIN_REPLICAS" ]] \
  || { echo "deploy.sh: need 1 ≤ --min-replicas ≤ --max-replicas" >&2; exit 2; }
case "$ARTIFACT_URI" in ""|gs://*) ;; *) echo "deploy.sh: --artifact-uri must be gs://…" >&2; exit 2 ;; esac
TAG="${LOCAL_IMAGE##*:}"; [ "$TAG" != "$LOCAL_IMAGE" ] || TAG=latest
REGISTRY="$REGION-docker.pkg.dev"
IMAGE="${IMAGE:-$REGISTRY/$PROJECT/$REPOSITORY/inferscope:$TAG}"
ENGINE=podman; command -v podman >/dev/null || ENGINE=docker

# Prints a command (quoted so it can be pasted), then runs it unless --dry-run.
run() {
  printf '+'; printf ' %q' "$@"; printf '\n'
  [ "$DRY_RUN" = 1 ] || "$@"
}
# The ID of the newest Model / Endpoint named $NAME (the command is printed on stderr; in a dry run
# the placeholder stands in for its answer).
id_of() {
  local kind="$1" placeholder="$2"
  local cmd=(gcloud ai "$kind" list "${G[@]}" --filter="display_name=$NAME" --sort-by=~create_time
    --limit=1 --format='value(name.basename())')
  { printf '+'; printf ' %q' "${cmd[@]}"; printf '    # → %s\n' "$placeholder"; } >&2
  if [ "$DRY_RUN" = 1 ]; then echo "$placeholder"; else "${cmd[@]}"; fi
}

G=(--project="$PROJECT" --region="$REGION")

if [ "$PUSH" = 1 ]; then
  echo "# 1. the image into Artifact Registry"
  if [ "$DRY_RUN" = 1 ] || ! gcloud artifacts repositories describe "$REPOSITORY" --location="$REGION" --project="$PROJECT" >/dev/null 2>&1; then
    run gcloud artifacts repositories create "$REPOSITORY" --repository-format=docker --location="$REGION" --project="$PROJECT"
  fi
  run gcloud auth configure-docker "$REGISTRY" --quiet
  run "$ENGINE" tag "$LOCAL_IMAGE" "$IMAGE"
  run "$ENGINE" push "$IMAGE"
fi

echo "# 2. the Model: our container, its port and routes (Vertex sets AIP_HTTP_PORT, AIP_HEALTH_ROUTE, AIP_PREDICT_ROUTE)"
ENV_VARS="INFERSCOPE_VERTEX_MODEL=$VARIANT"
UPLOAD=(gcloud ai models upload "${G[@]}" --display-name="$NAME"
  --container-image-uri="$IMAGE"
  --container-ports="$PORT"
  --container-health-route="$HEALTH_ROUTE"
  --container-predict-route="$PREDICT_ROUTE"
  --container-env-vars="$ENV_VARS")
# With models in Cloud Storage Vertex copies them and hands the container AIP_STORAGE_URI.
[ -z "$ARTIFACT_URI" ] || UPLOAD+=(--artifact-uri="$ARTIFACT_URI")
run "${UPLOAD[@]}"
MODEL_ID="$(id_of models '$MODEL_ID')"

echo "# 3. the Endpoint"
run gcloud ai endpoints create "${G[@]}" --display-name="$NAME"
ENDPOINT_ID="$(id_of endpoints '$ENDPOINT_ID')"

echo "# 4. the Model on the Endpoint: machine, replicas, autoscaling$([ -z "$GPU" ] || echo ", GPU")"
DEPLOY=(gcloud ai endpoints deploy-model "$ENDPOINT_ID" "${G[@]}" --model="$MODEL_ID" --display-name="$NAME"
  --machine-type="$MACHINE_TYPE" --min-replica-count="$MIN_REPLICAS" --max-replica-count="$MAX_REPLICAS"
  --autoscaling-metric-specs="cpu-usage=$CPU_TARGET" --traffic-split=0=100)
if [ -n "$GPU" ]; then
  GPU_TYPE="${GPU%%:*}" GPU_COUNT=1
  [ "$GPU_TYPE" = "$GPU" ] || GPU_COUNT="${GPU#*:}"
  DEPLOY+=(--accelerator="type=$GPU_TYPE,count=$GPU_COUNT")
fi
run "${DEPLOY[@]}"

cat <<EOF
# 5. try it (a photo, base64, to :predict):
#   echo "{\"instances\": [{\"b64\": \"\$(base64 -w0 photo.jpg)\"}], \"parameters\": {\"top_k\": 3}}" > req.json
#   gcloud ai endpoints predict $ENDPOINT_ID --project=$PROJECT --region=$REGION --json-request=req.json
# and serve the page from anywhere with the variants on the endpoint (inferscope serve --config):
#   [variants.$VARIANT]
#   backend = "vertex"
#   project = "$PROJECT"
#   region = "$REGION"
#   endpoint = "$ENDPOINT_ID"
EOF
