import io
import json
import sys
import tarfile
import textwrap

import pytest

from models.aws_tasks import aws_task_configs, choose_batch_inference, scoring_job_kwargs
from models.errors import ModelInputError
from models.sagemaker import AwsJobSettings, deepar_image_uri, resource_name
from models.synthetic import write_synthetic_prepared
from saodf.config import Settings
from saodf.errors import ConfigError

ROLE = "arn:aws:iam::123456789012:role/saodf-sagemaker"
IMAGE = "522234722520.dkr.ecr.us-east-1.amazonaws.com/forecasting-deepar:1"


def _job(**changes):
    return AwsJobSettings(
        role_arn=ROLE, artifacts_url="s3://saodf-test/sm", image_uri=IMAGE, **changes
    )


@pytest.fixture
def prepared_url(tmp_path, monkeypatch):
    """Return an S3 URL whose manifest is read from a local synthetic dataset."""
    import models.aws_tasks
    from models.prepared import read_manifest

    local = write_synthetic_prepared(tmp_path / "prepared", groups={"5min": "5min", "1h": "h"})
    monkeypatch.setattr(models.aws_tasks, "read_manifest", lambda url: read_manifest(local))
    return "s3://saodf-test/prepared/run"


def test_choose_prefers_spot_when_cheaper():
    choice = choose_batch_inference(100, _job())
    assert choice["mode"] == "spot_training"
    assert choice["spot_training_usd"] < choice["transform_usd"]


def test_choose_transform_when_too_long():
    choice = choose_batch_inference(1_000_000, _job())
    assert choice["mode"] == "transform"
    assert "exceed the Spot job's MaxRuntimeInSeconds=1800" in choice["reason"]


def test_choose_transform_without_savings():
    from models.cost import load_prices

    prices = load_prices()
    prices["sagemaker.spot_savings"] = {**prices["sagemaker.spot_savings"], "usd": 0.0}
    choice = choose_batch_inference(100, _job(), prices=prices)
    assert choice["mode"] == "transform"


def test_choose_forced_mode():
    choice = choose_batch_inference(100, _job(batch_inference="transform"))
    assert choice["mode"] == "transform"
    assert choice["reason"] == "batch_inference=transform is set"


def test_choose_rejects_empty_group():
    with pytest.raises(ModelInputError, match=r"series_count=0 is invalid"):
        choose_batch_inference(0, _job())


def test_task_configs_per_group(prepared_url):
    configs = aws_task_configs(prepared_url, "interval-x", 1, Settings.from_env(), job=_job())
    training = configs["training"][0]
    assert sorted(configs["groups"]) == ["1h", "5min"]
    assert len(configs["training"]) == 2
    assert training["action_if_job_exists"] == "fail"
    assert training["config"]["HyperParameters"]["time_freq"] in ("5min", "H")
    assert training["max_ingestion_time"] == 3600 + 600


def test_task_configs_names_follow_try(prepared_url):
    first = aws_task_configs(prepared_url, "interval-x", 1, Settings.from_env(), job=_job())
    retry = aws_task_configs(prepared_url, "interval-x", 2, Settings.from_env(), job=_job())
    again = aws_task_configs(prepared_url, "interval-x", 1, Settings.from_env(), job=_job())
    names = [c["config"]["TrainingJobName"] for c in first["training"]]
    retry_names = [c["config"]["TrainingJobName"] for c in retry["training"]]
    assert names == [c["config"]["TrainingJobName"] for c in again["training"]]
    assert not set(names) & set(retry_names)


def test_task_configs_transform_mode(prepared_url):
    configs = aws_task_configs(
        prepared_url, "interval-x", 1, Settings.from_env(), job=_job(batch_inference="transform")
    )
    transform = configs["transform"][0]
    assert configs["spot_inference"] == []
    assert transform["action_if_model_exists"] == "fail"
    assert (
        transform["config"]["Transform"]["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"]
        == "s3://saodf-test/prepared/run/groups/5min/test/"
    )


def test_task_configs_model_from_earlier_try(prepared_url):
    trained = resource_name("training", "interval-x", "5min", 1)
    configs = aws_task_configs(
        prepared_url,
        "interval-x",
        2,
        Settings.from_env(),
        training_job_names={"5min": trained},
        job=_job(batch_inference="transform"),
    )
    model = next(
        c["config"]["Model"]
        for c in configs["transform"]
        if "5min" in c["config"]["Model"]["ModelName"]
    )
    assert f"/models/{trained}/output/model.tar.gz" in model["PrimaryContainer"]["ModelDataUrl"]
    assert model["ModelName"].endswith("-t2")


def _scoring_request(role="champion", mode="transform"):
    return {
        "group": "5min",
        "role": role,
        "mode": mode,
        "training_job_name": "saodf-train-5min-old-t1",
        "model_data_url": "s3://saodf-test/sm/models/old/output/model.tar.gz",
        "input_url": "s3://saodf-test/sm/scoring/interval-x/5min/input/",
        "output_url": f"s3://saodf-test/sm/scoring/interval-x/5min/{role}/",
    }


def test_scoring_transform_reads_model_url():
    built = scoring_job_kwargs(_scoring_request(), "interval-x", 1, _job())
    config = built["kwargs"]["config"]
    assert built["mode"] == "transform"
    assert built["job_name"] == resource_name("champion_transform", "interval-x", "5min", 1)
    assert config["Model"]["ModelName"] == built["model_name"]
    assert config["Model"]["PrimaryContainer"]["ModelDataUrl"] == (
        "s3://saodf-test/sm/models/old/output/model.tar.gz"
    )
    assert config["Transform"]["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"] == (
        "s3://saodf-test/sm/scoring/interval-x/5min/input/"
    )
    assert built["kwargs"]["action_if_model_exists"] == "fail"


def test_scoring_spot_reads_model_url():
    request = _scoring_request(mode="spot_training")
    built = scoring_job_kwargs(request, "interval-x", 1, _job())
    channels = {
        channel["ChannelName"]: channel["DataSource"]["S3DataSource"]["S3Uri"]
        for channel in built["kwargs"]["config"]["InputDataConfig"]
    }
    assert built["model_name"] is None
    assert channels["model"] == "s3://saodf-test/sm/models/old/output/model.tar.gz"
    assert channels["input"] == "s3://saodf-test/sm/scoring/interval-x/5min/input/"


def test_scoring_names_per_role_and_try():
    names = {
        scoring_job_kwargs(_scoring_request(role, mode), "interval-x", try_number, _job())[
            "job_name"
        ]
        for role in ("candidate", "champion")
        for mode in ("transform", "spot_training")
        for try_number in (1, 2)
    }
    again = scoring_job_kwargs(_scoring_request(), "interval-x", 1, _job())["job_name"]
    assert len(names) == 8
    assert again in names


def test_scoring_rejects_bad_role():
    with pytest.raises(ConfigError, match=r"scoring role 'baseline' is invalid"):
        scoring_job_kwargs(_scoring_request(role="baseline"), "interval-x", 1, _job())


def test_task_configs_reject_local_url():
    with pytest.raises(ConfigError, match=r"prepared_url='file:///x' is not an s3:// URL"):
        aws_task_configs("file:///x", "interval-x", 1, Settings.from_env(), job=_job())


def test_image_uri_from_sdk():
    assert deepar_image_uri("us-east-1") == IMAGE


STUB_SERVER = textwrap.dedent(
    """
    import json, os, sys
    from http.server import BaseHTTPRequestHandler, HTTPServer

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            self.send_response(200)
            self.end_headers()

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            config = body["configuration"]
            steps = int(open(os.path.join(sys.argv[1], "steps")).read())
            out = []
            for instance in body["instances"]:
                last = instance["target"][-1]
                out.append({"mean": [last] * steps,
                            "quantiles": {q: [last] * steps for q in config["quantiles"]}})
            data = json.dumps({"predictions": out}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    HTTPServer(("127.0.0.1", int(os.environ["SAGEMAKER_BIND_TO_PORT"])), Handler).serve_forever()
    """
)


def test_spot_inference_script_writes_lines(tmp_path):
    from models import spot_batch_inference
    from saodf.stack.process import free_port

    model_channel = tmp_path / "model"
    model_channel.mkdir()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        info = tarfile.TarInfo("steps")
        info.size = 1
        archive.addfile(info, io.BytesIO(b"3"))
    (model_channel / "model.tar.gz").write_bytes(buffer.getvalue())
    input_channel = tmp_path / "input"
    input_channel.mkdir()
    lines = [{"start": "2024-01-01 00:00:00", "target": [1.0, v]} for v in (2.0, 5.0)]
    (input_channel / "data.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    server = tmp_path / "server.py"
    server.write_text(STUB_SERVER)
    model_dir = tmp_path / "opt-ml-model"

    counts = spot_batch_inference.run(
        model_channel,
        input_channel,
        model_dir,
        tmp_path / "output",
        [sys.executable, str(server), str(model_dir)],
        free_port(),
        spot_batch_inference.DEFAULT_INFERENCE_CONFIG,
    )
    written = (tmp_path / "output" / "data.jsonl.out").read_text().splitlines()
    assert counts == {"data.jsonl.out": 2}
    assert json.loads(written[1])["quantiles"]["0.9"] == [5.0, 5.0, 5.0]
    assert list(model_dir.iterdir()) == []
