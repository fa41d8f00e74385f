#!/usr/bin/env bash
# The README's test command. On a fresh Debian 12 machine it first sets up what the tests need,
# each part only when missing:
#   - Debian packages (tools/scripts/apt-need.sh: one `apt-get update`, then only what is missing; when
#     not root it prints the command to run and stops);
#   - the Rust toolchain pinned in rust-toolchain.toml (needs rustup);
#   - the independent Python peers (boto3's SigV4 signer, moto's S3/KMS, AWS's own
#     Encryption SDK CLI and the AWS CLI v1) in target/peers-venv.
# Then it runs the whole workspace's tests with those peers required (BIDDING_REQUIRE_PEERS=1),
# so no interop test can quietly skip. Extra arguments go to `cargo test`, e.g.
# `tools/test.sh --test initramfs`.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf 'test.sh: %s\n' "$*" >&2; }

# What the tests run besides cargo's own builds, by Debian package:
#   cpio             tools/bidctl/tests/initramfs.rs: GNU cpio lists, extracts and re-archives ours
#   openssl          core/tests/cms.rs, tools/bidctl/tests/cli.rs, tools/bidctl/tests/kms_emulator.rs
#   util-linux       tools/bidctl/tests/enclave_pid1.rs: unshare --pid --mount --fork
#   python3, python3-venv, ca-certificates   the peers' venv, pip over HTTPS
#   gcc, libc6-dev   aws-lc's C code and the linker
# (sh, find, sort, touch, id come from Debian's essential packages.)
tools/scripts/apt-need.sh test.sh cpio openssl util-linux python3 python3-venv ca-certificates gcc libc6-dev

if ! command -v cargo >/dev/null || ! command -v rustup >/dev/null; then
  say "cargo and rustup are needed: install rustup (https://rustup.rs), e.g."
  printf '  %s\n' "curl --proto '=https' -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --default-toolchain none" >&2
  exit 1
fi
channel=$(sed -n 's/^channel *= *"\(.*\)"$/\1/p' rust-toolchain.toml)
if ! rustup toolchain list | grep -q "^$channel-"; then
  say "installing the pinned Rust toolchain $channel (rust-toolchain.toml)"
  rustup toolchain install   # with no argument: the toolchain file's channel, components, targets
fi

venv=target/peers-venv
# aws-encryption-cli follows AWS_ENDPOINT_URL_KMS only with botocore >= 1.31 (boto3 >= 1.28),
# which it does not require itself: both pinned. The AWS CLI v1 (`awscli`, tools/bidctl/tests/awscli_v1.rs)
# carries its own copy of botocore (awscli.botocore), so it does not constrain boto3's.
# cfn-lint (the version tools/scripts/lint-deploy.sh pins): tools/bidctl/tests/deploy_policies.rs reads
# deploy/*.yaml with its CloudFormation YAML decoder (tools/scripts/cfn_resolve.py).
peers=('moto[s3,kms,iam]==5.2.5' flask flask-cors 'boto3==1.44.8' 'aws-encryption-sdk-cli==4.3.0'
  'awscli==1.46.3' 'cfn-lint==1.58.0')
if ! "$venv/bin/python" -c 'import boto3, moto, flask, flask_cors, aws_encryption_sdk_cli, awscli, cfnlint' 2>/dev/null \
  || ! [ -x "$venv/bin/aws-encryption-cli" ] || ! [ -x "$venv/bin/aws" ]; then
  say "installing boto3, moto, aws-encryption-sdk-cli, awscli and cfn-lint into $venv (once)"
  python3 -m venv --clear "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "${peers[@]}"
fi
export BIDDING_PYTHON="$PWD/$venv/bin/python"
export BIDDING_REQUIRE_PEERS=1
exec cargo test --workspace --locked "$@"
