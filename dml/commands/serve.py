"""Serve a gallery index (index.py) over HTTP: a JSON API and a web page.

    python serve.py --index_dir DIR [--host 127.0.0.1] [--port 8080] [--api_key_file KEY]

    GET  /               the web page: drop a query image, see its hits
    GET  /health         {"status": "ok", "generation": ...}
    GET  /info           the index (count, network, backend, stored threshold), the limits
    POST /search         images (multipart, files named "image") or JSON {"vectors": [[...]]};
                         topk, threshold, rerank (none, qe, dba, kreciprocal; default
                         --rerank): search.py's JSON of hits, with the generation
    POST /add            images with path and label fields, or JSON vectors/paths/labels (key)
    POST /remove         JSON {"paths": [...]} or {"prefix": "..."} (key)
    GET  /thumb/ROW      a thumbnail of the gallery image of a row
    GET  /metrics        Prometheus text

Writes need the key of --api_key_file (`Authorization: Bearer KEY`); without that flag
the service takes no changes. Reads are open unless --read_key_file is given. A change
committed by index.py in another process is served from the next request on.
"""
import argparse
import signal
import socket

# utility first, before anything imports paddle: it quiets Paddle's import-time notices
from dml.cli import ArgumentParser, add_arguments, run_cli
from dml.errors import UserError
from dml.flag_types import nonnegative_float, nonnegative_int, positive_float, positive_int
from dml.index import flags
from dml.retrieval import rerank
from dml.script_flags import add_engine_argument

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def build_parser():
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    flags.add_index_dir(parser)
    add_arguments("host", str, "127.0.0.1", "Address to listen on (0.0.0.0: every interface; then use keys).", parser)
    add_arguments("port", nonnegative_int, 8080, "Port to listen on (0: any free port, printed).", parser)
    add_arguments("api_key_file", str, None, "File holding the key that /add and /remove need (without it the "
                  "service takes no changes).", parser)
    add_arguments("read_key_file", str, None, "File holding a key that reads need too (default: reads are open).",
                  parser)
    add_arguments("max_upload_mb", positive_float, 32.0, "Largest request body, in MiB.", parser)
    add_arguments("max_pixels", positive_int, 40_000_000, "Largest image (width x height), checked before decoding.",
                  parser)
    add_arguments("max_images", positive_int, 64, "Most images per request.", parser)
    add_arguments("request_timeout", positive_float, 30.0, "Seconds a request may take before it is answered 503.",
                  parser)
    add_arguments("max_batch", positive_int, 32, "Most images (or query vectors) of concurrent requests run "
                  "through the network (or the index) together.", parser)
    add_arguments("max_wait_ms", nonnegative_float, 10.0, "Longest wait for more requests' images to fill a batch "
                  "(only while more are on their way, or fewer than during the last batch have come).", parser)
    add_arguments("use_gpu", bool, True, "Run on the GPU when Paddle sees one.", parser)
    add_arguments("inference_model", str, None, "Embed images with this model written by export_model.py "
                  "(paddle.inference or ONNX) instead of the index's weights; its export_info.json must record "
                  "the index's network (weights sha256, model, embedding size, image shape).", parser)
    add_engine_argument(parser, training=False)
    add_arguments("access_log", bool, False, "Log every request (uvicorn's access log).", parser)
    rerank.add_rerank_arguments(parser, dba_flags=False)
    return parser


def listening_socket(host, port):
    """The bound socket (so a port in use is one line, and --port 0 picks a free one)."""
    if port > 65535:
        raise UserError(f"--port {port}: ports go up to 65535")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as err:
        raise UserError(f"cannot listen on {host} port {port}: {err.strerror or err}") from None
    sock.listen(2048)
    return sock


def stop_on_sigterm():
    """SIGTERM ends the service with exit code 0: uvicorn shuts down gracefully, then
    raises the signal again, which this handler turns into a normal exit."""
    def stop(signum, frame):
        raise SystemExit(0)
    signal.signal(signal.SIGTERM, stop)


def service_modules():
    """uvicorn and dml.serve's app and config; one line when the optional packages are missing."""
    try:
        import uvicorn

        from dml.serve import app, config
    except ImportError as err:
        raise UserError(f"the search service needs {err.name or 'FastAPI and uvicorn'}: "
                        f"pip install -r requirements-serve.txt (or pip install paddle-dml[serve])") from None
    return uvicorn, app, config


def serve(args):
    uvicorn, app, config = service_modules()
    stop_on_sigterm()
    settings = config.from_args(args)
    sock = listening_socket(args.host, args.port)
    service = app.Service(settings)
    try:
        host, port = sock.getsockname()[:2]
        served = service.live.current()
        print(f"serving index {args.index_dir} ({served.count} vectors, generation {served.generation}) on "
              f"http://{host if ':' not in host else f'[{host}]'}:{port}/ ; writes: "
              f"{'need the key' if settings.write_key else 'off'}; reads: "
              f"{'need a key' if settings.read_key else 'open'}", flush=True)
        if args.host not in LOOPBACK:
            print(f"listening on {args.host}: other machines can reach this service"
                  + ("" if settings.read_key else "; reads are open to them (--read_key_file)"), flush=True)
        server = uvicorn.Server(uvicorn.Config(app.create_app(service), log_level="warning",
                                              access_log=args.access_log, timeout_graceful_shutdown=5))
        server.run(sockets=[sock])
    finally:
        service.close()
        sock.close()


def main(argv=None):
    serve(build_parser().parse_args(argv))


if __name__ == "__main__":
    run_cli(main)
