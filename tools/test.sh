#!/usr/bin/env bash
# The README's test command. Sets up the independent Python peers once (boto3's SigV4 signer and
# moto's S3/KMS, in target/peers-venv), then runs the whole workspace's tests with those peers
# required, so no interop test can quietly skip. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/peers-venv
if ! "$venv/bin/python" -c 'import boto3, moto, flask, flask_cors' 2>/dev/null; then
  echo "test.sh: installing boto3 and moto into $venv (once)" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'moto[s3,kms,iam]==5.2.5' flask flask-cors boto3
fi
export BIDDING_PYTHON="$PWD/$venv/bin/python"
export BIDDING_REQUIRE_PEERS=1
exec cargo test --workspace --locked "$@"
