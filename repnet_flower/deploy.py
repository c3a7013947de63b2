"""A Flower deployment on this machine: a SuperLink, one SuperNode per
client, the app run on them, and everything stopped after.

Every process is Flower's own (`flower-superlink`, `flower-supernode`,
`flwr run`), talking over 127.0.0.1 only, as separate processes: the same
deployment as phones and a server would make, without Ray. Flower's home
folder, logs and the SuperLink's state go to `work_dir`; update checks,
telemetry and the installation of the app's dependencies are off (the
environment already has them, and may be offline).

    python -m repnet_flower.deploy --app=federated --work-dir=runs/fl \\
        --node-config='{"data": "/abs/client_0.npz"}' \\
        --node-config='{"data": "/abs/client_1.npz"}' --run-config='{...}'

`keras-repnet federate` prepares the model and the clients' data and calls
`run_local`.
"""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

CONNECTION = "local-deployment"
ENVIRONMENT = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
}
_START_TIMEOUT = 60


def config_string(values: dict) -> str:
    """`{"a": 1, "b": "x"}` -> `a=1 b="x"`, as Flower's `--run-config` and
    `--node-config` read it."""
    return " ".join(
        f"{key}={json.dumps(value) if isinstance(value, str) else value}"
        for key, value in values.items()
    )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for_port(port, process, log_path):
    deadline = time.time() + _START_TIMEOUT
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"A Flower process exited at start (code {process.returncode}); "
                f"its log: {log_path}"
            )
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    raise RuntimeError(f"Nothing listens on 127.0.0.1:{port}; see {log_path}")


def _executable(name):
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else name


def run_local(app_dir, node_configs, run_config, work_dir, *, timeout=3600,
              log=print) -> int:
    """Runs the Flower app in `app_dir` on a local deployment.

    Args:
        app_dir: str or path. The app (its `pyproject.toml`).
        node_configs: list of dict. One SuperNode per entry, with that node
            configuration (e.g. `{"data": "client_0.npz"}`).
        run_config: dict. The app's run configuration.
        work_dir: str or path. Flower's home folder and the logs.
        timeout: float. Seconds the run may take.
        log: callable that prints one line.

    Returns:
        The exit code of `flwr run` (0 when the run finished).
    """
    work_dir = Path(work_dir).resolve()
    home = work_dir / "flwr-home"
    home.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "{CONNECTION}"\n\n'
        f'[superlink.{CONNECTION}]\naddress = "127.0.0.1:{port}"\n'
        "insecure = true\n"
    )
    environment = {
        **os.environ,
        **ENVIRONMENT,
        "FLWR_HOME": str(home),
        # Flower starts its helpers (flower-superexec, flwr-serverapp, ...)
        # by name: those beside this Python first.
        "PATH": os.pathsep.join(
            [str(Path(sys.executable).parent), os.environ.get("PATH", "")]
        ),
    }
    processes = []

    def start(name, arguments, log_name):
        log_path = work_dir / log_name
        with open(log_path, "w") as output:
            process = subprocess.Popen(
                [_executable(name), *arguments],
                stdout=output,
                stderr=subprocess.STDOUT,
                env=environment,
                cwd=work_dir,
                start_new_session=True,
            )
        processes.append(process)
        return process, log_path

    try:
        superlink, superlink_log = start(
            "flower-superlink",
            ["--insecure", "--disable-runtime-dependency-installation",
             "--port", str(port)],
            "superlink.log",
        )
        _wait_for_port(port, superlink, superlink_log)
        for index, node_config in enumerate(node_configs):
            node_port = _free_port()
            node, node_log = start(
                "flower-supernode",
                ["--insecure", "--superlink", f"127.0.0.1:{port}",
                 "--port", str(node_port),
                 "--node-config", config_string(node_config)],
                f"supernode_{index}.log",
            )
            _wait_for_port(node_port, node, node_log)
        log(
            f"Flower on 127.0.0.1:{port}: a SuperLink and "
            f"{len(node_configs)} SuperNodes (logs in {work_dir})."
        )
        completed = subprocess.run(
            [_executable("flwr"), "run", str(Path(app_dir).resolve()),
             CONNECTION, "--stream", "--run-config", config_string(run_config)],
            env=environment,
            cwd=work_dir,
            timeout=timeout,
            stdout=open(work_dir / "run.log", "w"),
            stderr=subprocess.STDOUT,
        )
        return completed.returncode
    finally:
        for process in reversed(processes):
            _stop(process)


def _stop(process):
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)
    except (subprocess.TimeoutExpired, ProcessLookupError):
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()


def main(argv=None):
    parser = argparse.ArgumentParser(prog="repnet_flower.deploy", description=(
        "Runs a Flower app on a SuperLink and SuperNodes on 127.0.0.1."))
    parser.add_argument("--app", required=True, help="The app folder.")
    parser.add_argument("--work-dir", required=True)
    parser.add_argument("--node-config", action="append", required=True,
                        help="One SuperNode's configuration, as JSON.")
    parser.add_argument("--run-config", default="{}", help="JSON.")
    args = parser.parse_args(argv)
    return run_local(
        args.app,
        [json.loads(c) for c in args.node_config],
        json.loads(args.run_config),
        args.work_dir,
    )


if __name__ == "__main__":
    sys.exit(main())
