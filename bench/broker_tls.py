"""TLS handshakes per second on the device broker's listener, without MQTT, and the broker's
CPU per handshake: what an authenticated TLS connect costs before the extension is asked.

Starts its own broker (bench/broker_connects.py's start_broker: the build of deploy/local/up
on free ports, http mode pointed at nothing, since no CONNECT is ever sent) and drives it
with OpenSSL's C client, `openssl s_time` (--clients processes at once, each one handshake
after another for --seconds), which costs far less CPU per handshake than Python's clients:
- `new`: a full handshake per connection (what a device without session resumption does);
- `reuse`: the session resumed (TLS 1.2 session id or ticket, TLS 1.3 PSK ticket).
For each it prints handshakes/s and the CPU per handshake of the broker (its JVM's
/proc/<pid>/stat over the run) and of the clients (this process's children).

Variants, each alone: --key ec|rsa (the server certificate's key: make_certs.py's EC P-256,
or an RSA 2048 key under the same CA), --tls 1.3|1.2 (the clients' only version), --group
(the clients' only key-exchange group, via OPENSSL_CONF), --java (another JDK),
--jvm-option (repeatable: GC, heap, jdk.tls.* properties), --jfr (a flight recording of the
broker over the whole run, written to that file).

Usage: .venv/bin/python bench/broker_tls.py [--seconds 10] [--clients 2] [--key ec]
       [--tls 1.3] [--group X25519] [--java java] [--jvm-option -XX:+UseParallelGC]
       [--kinds new,reuse] [--jfr /tmp/broker.jfr] [--lib .state/broker/lib]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12

sys.path.insert(0, str(Path(__file__).resolve().parent))
from broker_connects import DEFAULT_JVM_OPTIONS, REPO, cpu_s, start_broker

S_TIME_RESULT = re.compile(rb"(\d+) connections in ([\d.]+) real seconds")


def use_rsa_key(tls: Path) -> None:
    """Replaces the broker's keystore with an RSA 2048 key certified by the same local CA."""
    ca_cert = x509.load_pem_x509_certificate((tls / "ca.pem").read_bytes())
    ca_key = serialization.load_pem_private_key((tls / "ca.key").read_bytes(), None)
    ec_leaf = x509.load_pem_x509_certificate((tls / "server.pem").read_bytes())
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(ec_leaf.subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=30))
    )
    for extension in ec_leaf.extensions:
        if extension.oid.dotted_string not in ("2.5.29.14", "2.5.29.35"):  # key ids differ
            builder = builder.add_extension(extension.value, extension.critical)
    leaf = builder.sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    password = (tls / "server.p12.pass").read_bytes()
    keystore = pkcs12.serialize_key_and_certificates(
        b"server", key, leaf, [ca_cert], serialization.BestAvailableEncryption(password)
    )
    (tls / "server.p12").write_bytes(keystore)


def client_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_s_time(args: argparse.Namespace, port: int, kind: str, env: dict[str, str]) -> None:
    command = ["openssl", "s_time", "-connect", f"127.0.0.1:{port}", f"-{kind}"]
    command += ["-time", str(args.seconds), f"-tls{args.tls.replace('.', '_')}"]
    broker_before, client_before = cpu_s(args.broker_pid), client_cpu_s()
    started = time.perf_counter()
    clients = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
        for _ in range(args.clients)
    ]
    outputs = [client.communicate()[0] for client in clients]
    elapsed = time.perf_counter() - started
    broker_cpu, client_cpu = cpu_s(args.broker_pid) - broker_before, client_cpu_s() - client_before
    handshakes = 0
    for output in outputs:
        found = S_TIME_RESULT.findall(output)
        if not found:
            sys.exit(f"openssl s_time gave no result:\n{output.decode(errors='replace')}")
        handshakes += int(found[-1][0])
    print(
        f"broker.tls_handshakes_per_s.{kind} = {handshakes / elapsed:.0f} handshakes/s  "
        f"({handshakes} in {elapsed:.1f} s, {args.clients} s_time clients; CPU ms per "
        f"handshake: broker {broker_cpu * 1000 / handshakes:.3f}, clients "
        f"{client_cpu * 1000 / handshakes:.3f}; load average {os.getloadavg()[0]:.1f})",
        flush=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--clients", type=int, default=2, help="s_time processes at once")
    parser.add_argument("--kinds", default="new,reuse")
    parser.add_argument("--key", choices=("ec", "rsa"), default="ec")
    parser.add_argument("--tls", choices=("1.3", "1.2"), default="1.3")
    parser.add_argument("--group", help="the clients' only group, e.g. X25519 or P-256")
    parser.add_argument("--java", default="java")
    parser.add_argument("--jvm-option", action="append", default=[], dest="jvm_options")
    parser.add_argument("--jfr", type=Path, help="record the broker with JFR into this file")
    parser.add_argument("--warmup-s", type=int, default=10, help="full handshakes before")
    state = os.environ.get("OTA_STATE_DIR") or str(REPO / ".state")
    parser.add_argument("--lib", type=Path, default=Path(state) / "broker" / "lib")
    args = parser.parse_args()
    chosen_gc = any(o.startswith("-XX:+Use") and o.endswith("GC") for o in args.jvm_options)
    defaults = [o for o in DEFAULT_JVM_OPTIONS if not (chosen_gc and o == "-XX:+UseG1GC")]
    jvm_options = (*defaults, *args.jvm_options)  # a GC given replaces the default G1
    if args.jfr:
        jvm_options += (f"-XX:StartFlightRecording=filename={args.jfr},settings=profile",)
    auth = {"OTA_BROKER_AUTH_URL": "http://127.0.0.1:9/unused", "OTA_BROKER_AUTH_KEY": "unused"}
    with tempfile.TemporaryDirectory(prefix="broker-tls-") as folder:
        env = dict(os.environ)
        if args.group:
            conf = Path(folder) / "openssl.cnf"
            conf.write_text(
                "openssl_conf = conf\n[conf]\nssl_conf = ssl\n[ssl]\nsystem_default = sys\n"
                f"[sys]\nGroups = {args.group}\n"
            )
            env["OPENSSL_CONF"] = str(conf)
        prepare = use_rsa_key if args.key == "rsa" else None
        broker = start_broker(args.lib, Path(folder), args.java, auth, jvm_options, prepare)
        args.broker_pid = broker.process.pid
        try:
            print(
                f"java {args.java} {' '.join(jvm_options)}; key {args.key}, TLS {args.tls}, "
                f"group {args.group or 'OpenSSL default'}",
                flush=True,
            )
            warm = argparse.Namespace(**{**vars(args), "seconds": args.warmup_s})
            if args.warmup_s:
                run_s_time(warm, broker.tls_port, "new", env)  # the JIT, before measuring
            for kind in args.kinds.split(","):
                run_s_time(args, broker.tls_port, kind, env)
        finally:
            broker.process.terminate()
            broker.process.wait(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
