"""boto3 against the KMS emulator: requests signed by botocore's own SigV4 signer, the
reference implementation, so that the emulator's verification is checked against AWS's.

Usage: kms_boto3.py ENDPOINT CA_PEM|- ACCESS_KEY_ID SECRET REGION
(CA_PEM is - for a plain-HTTP endpoint.) Prints one line per check; exits 1 on the first
failure, naming it.
"""

import datetime
import sys
from unittest import mock

import boto3
import botocore.auth
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError

endpoint, ca, key_id, secret, region = sys.argv[1:6]
verify = False if ca == "-" else ca
# One attempt: a retry would hide the error under test (and botocore corrects clock skew
# on retries).
config = Config(retries={"mode": "standard", "total_max_attempts": 1})


def client(secret_key=secret, cfg=config):
    return boto3.client(
        "kms",
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id=key_id,
        aws_secret_access_key=secret_key,
        verify=verify,
        config=cfg,
    )


def check(name, ok, detail=""):
    print(f"{'ok' if ok else 'FAILED'}: {name}{': ' + detail if detail else ''}")
    if not ok:
        sys.exit(1)


def expect_error(name, code, call, message_part=None):
    try:
        call()
    except ClientError as e:
        got = e.response["Error"]["Code"]
        message = e.response["Error"].get("Message", "")
        ok = got == code and (message_part is None or message_part in message)
        check(name, ok, f"{got}: {message}")
        return
    check(name, False, f"no error, expected {code}")


kms = client()
key = kms.create_key(Description="boto3 peer")["KeyMetadata"]
arn = key["Arn"]
check("CreateKey returns a key ARN", arn.startswith(f"arn:aws:kms:{region}:") and key["KeyId"] in arn, arn)
check("DescribeKey", kms.describe_key(KeyId=key["KeyId"])["KeyMetadata"]["Arn"] == arn)

context = {"auction": "a1", "lot": "7", "buyer": "Buyer1"}
enc = kms.encrypt(KeyId=arn, Plaintext=b"100000", EncryptionContext=context)
check("Encrypt answers the key ARN", enc["KeyId"] == arn, enc["KeyId"])
dec = kms.decrypt(CiphertextBlob=enc["CiphertextBlob"], EncryptionContext=context)
check("Decrypt with the encryption context", dec["Plaintext"] == b"100000" and dec["KeyId"] == arn)
gdk = kms.generate_data_key(KeyId=arn, KeySpec="AES_256", EncryptionContext=context)
again = kms.decrypt(CiphertextBlob=gdk["CiphertextBlob"], EncryptionContext=context, KeyId=arn)
check("GenerateDataKey", len(gdk["Plaintext"]) == 32 and again["Plaintext"] == gdk["Plaintext"])

expect_error(
    "a wrong encryption context",
    "InvalidCiphertextException",
    lambda: kms.decrypt(CiphertextBlob=enc["CiphertextBlob"], EncryptionContext={**context, "lot": "8"}),
)
other = kms.create_key(Description="another buyer")["KeyMetadata"]["Arn"]
expect_error(
    "another key's KeyId",
    "IncorrectKeyException",
    lambda: kms.decrypt(CiphertextBlob=enc["CiphertextBlob"], EncryptionContext=context, KeyId=other),
)
foreign = arn.replace(arn.split(":")[4], "444455556666")
expect_error(
    "a key of a foreign account",
    "NotFoundException",
    lambda: kms.decrypt(CiphertextBlob=enc["CiphertextBlob"], EncryptionContext=context, KeyId=foreign),
)
expect_error(
    "a wrong secret",
    "InvalidSignatureException",
    lambda: client(secret_key=secret + "x").encrypt(KeyId=arn, Plaintext=b"1"),
    "signature we calculated does not match",
)
expect_error(
    "no signature",
    "MissingAuthenticationTokenException",
    lambda: client(cfg=config.merge(Config(signature_version=UNSIGNED))).encrypt(KeyId=arn, Plaintext=b"1"),
)

real_now = botocore.auth.get_current_datetime
for minutes, part in ((-10, "Signature expired"), (10, "Signature not yet current")):
    skewed = lambda m=minutes: real_now() + datetime.timedelta(minutes=m)
    with mock.patch("botocore.auth.get_current_datetime", skewed):
        expect_error(
            f"a clock {minutes:+d} minutes off",
            "InvalidSignatureException",
            lambda: kms.encrypt(KeyId=arn, Plaintext=b"1"),
            part,
        )
with mock.patch("botocore.auth.get_current_datetime", lambda: real_now() - datetime.timedelta(minutes=4)):
    kms.encrypt(KeyId=arn, Plaintext=b"1")
    check("a clock 4 minutes off is within the limit", True)

print("boto3 peer: all checks passed")
