#!/usr/bin/env bash
# The README's test command. Sets up the independent Python peers once (boto3's SigV4 signer,
# moto's S3/KMS and AWS's own Encryption SDK CLI, in target/peers-venv), then runs the whole
# workspace's tests with those peers required, so no interop test can quietly skip. Extra
# arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/peers-venv
# aws-encryption-cli follows AWS_ENDPOINT_URL_KMS only with botocore >= 1.31 (boto3 >= 1.28),
# which it does not require itself: both pinned.
peers=('moto[s3,kms,iam]==5.2.5' flask flask-cors 'boto3==1.44.8' 'aws-encryption-sdk-cli==4.3.0')
if ! "$venv/bin/python" -c 'import boto3, moto, flask, flask_cors, aws_encryption_sdk_cli' 2>/dev/null \
  || ! [ -x "$venv/bin/aws-encryption-cli" ]; then
  echo "test.sh: installing boto3, moto and aws-encryption-sdk-cli into $venv (once)" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "${peers[@]}"
fi
export BIDDING_PYTHON="$PWD/$venv/bin/python"
export BIDDING_REQUIRE_PEERS=1
exec cargo test --workspace --locked "$@"
