import sys

import pytest

from saodf.errors import ServiceError
from saodf.stack import process


def _sleeper(tmp_path, name="sleeper", port=None):
    return process.ServiceSpec(
        name=name,
        argv=[sys.executable, "-c", "import time; time.sleep(60)"],
        run_dir=tmp_path / "run",
        log_dir=tmp_path / "logs",
        port=port,
        start_timeout=5,
        stop_timeout=5,
    )


def test_start_stop_by_pid(tmp_path):
    spec = _sleeper(tmp_path)
    assert process.start(spec) == "started"
    pid = process.running_process(spec).pid
    assert spec.pid_file.exists()
    assert process.start(spec) == "running"
    assert process.running_process(spec).pid == pid
    assert process.stop(spec) == "stopped"
    assert process.running_process(spec) is None
    assert not spec.pid_file.exists()


def test_stop_without_pid_file(tmp_path):
    assert process.stop(_sleeper(tmp_path)) == "not running"


def test_port_in_use_rejected(tmp_path):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        spec = _sleeper(tmp_path, port=port)
        spec.port_env_var = "SAODF_TEST_PORT"
        with pytest.raises(
            ServiceError, match=f"port 127.0.0.1:{port} is already in use.*SAODF_TEST_PORT"
        ):
            process.start(spec)


def test_exit_while_starting_reported(tmp_path):
    spec = _sleeper(tmp_path)
    spec.argv = [sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"]
    with pytest.raises(ServiceError, match="exited with code 3"):
        process.start(spec)


def test_stale_pid_file_ignored(tmp_path):
    spec = _sleeper(tmp_path)
    spec.run_dir.mkdir(parents=True)
    spec.pid_file.write_text('{"pid": 1, "create_time": 0}')
    assert process.running_process(spec) is None


def test_stop_tiers_cover_every_service():
    from saodf.stack.manager import SERVICE_ORDER, STOP_TIERS

    flat = [name for tier in STOP_TIERS for name in tier]
    assert sorted(flat) == sorted(SERVICE_ORDER)
    assert len(flat) == len(set(flat))


def test_busy_port_stops_before_any_start(tmp_path):
    import socket

    from saodf.stack.manager import _check_ports

    free = _sleeper(tmp_path, name="free")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        busy = _sleeper(tmp_path, name="busy", port=sock.getsockname()[1])
        busy.port_env_var = "SAODF_BUSY_PORT"
        with pytest.raises(ServiceError, match="busy needs .*SAODF_BUSY_PORT"):
            _check_ports({"free": free, "busy": busy}, ["free", "busy"])
    assert process.running_process(free) is None


def test_corrupt_pid_file_names_file(tmp_path):
    spec = _sleeper(tmp_path)
    spec.run_dir.mkdir(parents=True)
    spec.pid_file.write_text("garbage{")
    with pytest.raises(process.PidFileError, match=f"pid file {spec.pid_file} of sleeper"):
        process.stop(spec)
    assert spec.pid_file.exists()


def test_corrupt_pid_file_reports_bound_port(tmp_path):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        spec = _sleeper(tmp_path, port=port)
        spec.run_dir.mkdir(parents=True)
        spec.pid_file.write_text("garbage{")
        with pytest.raises(process.PidFileError, match=f"ss -ltnp 'sport = :{port}'"):
            process.stop(spec)


def test_corrupt_pid_file_in_status(tmp_path):
    spec = _sleeper(tmp_path)
    spec.run_dir.mkdir(parents=True)
    spec.pid_file.write_text('{"pid": "x"}')
    row = process.status(spec)
    assert row["healthy"] is False
    assert "does not contain a pid record" in row["error"]


def test_stop_reports_bound_port(tmp_path):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        state = process.stop(_sleeper(tmp_path, port=port))
    assert state.startswith("not running")
    assert f"port 127.0.0.1:{port} is still bound" in state


def test_down_fails_on_corrupt_pid_file(tmp_path, monkeypatch):
    from saodf.config import get_settings
    from saodf.stack import manager

    settings = get_settings().with_overrides(home=tmp_path / "home")
    monkeypatch.setattr(manager, "_service_ports", lambda _settings: {})
    settings.run_dir.mkdir(parents=True)
    (settings.run_dir / "gateway.pid").write_text("garbage{")
    lines = []
    with pytest.raises(ServiceError, match="failed to stop gateway"):
        manager.down(settings, echo=lines.append)
    assert any("gateway.pid" in line for line in lines)
