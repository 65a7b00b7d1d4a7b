"""Apply and destroy the real batch stack with terraform against a local moto_server.

Skipped when terraform or a filesystem mirror of the hashicorp/aws provider is missing.
A destroy is made to fail by pointing the provider at a closed port, as when the AWS
API is unreachable during teardown.
"""

from __future__ import annotations

import boto3
import pytest
from botocore.exceptions import ClientError

from saodf import teardown
from saodf.stack.process import free_port
from saodf.teardown import TeardownError, TerraformSetup

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def tf_setup() -> TerraformSetup:
    setup = TerraformSetup.from_env()
    if setup.binary is None or setup.plugin_dir is None:
        pytest.skip("terraform or a mirror of the hashicorp/aws provider is missing")
    return setup.with_overrides(destroy_attempts=2, retry_seconds=0.5, command_timeout=600)


@pytest.fixture
def aws(saodf_env, moto_endpoint):
    def client(service: str):
        return boto3.client(service, endpoint_url=moto_endpoint, region_name=saodf_env.aws_region)

    return client


@pytest.fixture
def kms_key(aws) -> str:
    # A platform key, as on AWS: a key created by the stack would wait on KMS for seconds.
    return aws("kms").create_key(Description="test platform data key")["KeyMetadata"]["Arn"]


def bucket_exists(s3, name: str) -> bool:
    try:
        s3.head_bucket(Bucket=name)
    except ClientError:
        return False
    return True


def test_batch_apply_destroy(saodf_env, aws, kms_key, tf_setup):
    lines: list[str] = []
    applied = teardown.apply_batch(
        saodf_env,
        "window-tfapply",
        lines.append,
        variables={"kms_key_arn": kms_key},
        setup=tf_setup,
    )
    assert applied["mode"] == "terraform"
    assert "aws_s3_bucket.scratch" in applied["resources"]
    assert any("Apply complete!" in line for line in lines)
    bucket = applied["outputs"]["scratch_bucket"]
    s3 = aws("s3")
    encryption = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]
    default = encryption["Rules"][0]["ApplyServerSideEncryptionByDefault"]
    assert default["SSEAlgorithm"] == "aws:kms"
    assert default["KMSMasterKeyID"] == kms_key
    block = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
    assert all(block.values())
    role = aws("iam").get_role(RoleName=bucket)["Role"]
    assert role["Arn"] == applied["outputs"]["job_role_arn"]

    lines.clear()
    result = teardown.teardown_batch(saodf_env, "window-tfapply", lines.append, setup=tf_setup)
    assert result["mode"] == "terraform"
    assert result["attempts"] == 1
    assert "aws_s3_bucket.scratch" in result["destroyed"]
    assert any("Destroy complete!" in line for line in lines)
    assert not bucket_exists(s3, bucket)
    with pytest.raises(ClientError, match="NoSuchEntity"):
        aws("iam").get_role(RoleName=bucket)
    assert not (saodf_env.batch_dir / "window-tfapply").exists()


def test_batch_destroy_failure_lists_survivors(saodf_env, aws, kms_key, tf_setup):
    applied = teardown.apply_batch(
        saodf_env, "window-tffail", variables={"kms_key_arn": kms_key}, setup=tf_setup
    )
    bucket = applied["outputs"]["scratch_bucket"]
    unreachable = saodf_env.with_overrides(aws_endpoint_url=f"http://127.0.0.1:{free_port()}")
    lines: list[str] = []
    with pytest.raises(TeardownError, match="after 2 destroy attempts") as raised:
        teardown.teardown_batch(unreachable, "window-tffail", lines.append, setup=tf_setup)
    assert "aws_s3_bucket.scratch" in raised.value.survivors
    assert "aws_iam_role.job" in raised.value.survivors
    assert "aws_s3_bucket.scratch" in str(raised.value)
    assert sum("Error:" in line for line in lines) >= 2
    assert bucket_exists(aws("s3"), bucket)
    state = saodf_env.batch_dir / "window-tffail" / "terraform" / "terraform.tfstate"
    assert state.exists()

    # Once the API responds again, rerunning the teardown destroys what survived.
    result = teardown.teardown_batch(saodf_env, "window-tffail", setup=tf_setup)
    assert set(raised.value.survivors) <= set(result["destroyed"])
    assert not bucket_exists(aws("s3"), bucket)
    assert not (saodf_env.batch_dir / "window-tffail").exists()
