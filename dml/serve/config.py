"""The service's settings: serve.py's flags, with the keys read from their files."""
from dataclasses import dataclass, field

from dml.retrieval import rerank

from . import auth

MAX_TOPK = 1000
WRITE_ROUTES = ("/add", "/remove")


@dataclass
class Config:
    index_dir: str
    host: str = "127.0.0.1"
    port: int = 8080
    write_key: bytes = None
    read_key: bytes = None
    max_upload_bytes: int = 32 << 20
    max_pixels: int = 40_000_000
    max_images: int = 64
    request_timeout: float = 30.0
    max_batch: int = 32
    max_wait_ms: float = 10.0
    engine: str = "static"
    use_gpu: bool = True
    inference_model: str = None  # export_model.py's directory run instead of the index's weights
    access_log: bool = False
    rerank: object = field(default_factory=rerank.Settings)  # the searches' re-ranking unless a request names one

    def limits(self):
        """What /info tells clients (and the page) about the limits."""
        return {"max_upload_bytes": self.max_upload_bytes, "max_pixels": self.max_pixels,
                "max_images": self.max_images, "request_timeout": self.request_timeout, "max_topk": MAX_TOPK}


def from_args(args):
    return Config(
        index_dir=args.index_dir, host=args.host, port=args.port,
        write_key=auth.read_key_file(args.api_key_file, "--api_key_file") if args.api_key_file else None,
        read_key=auth.read_key_file(args.read_key_file, "--read_key_file") if args.read_key_file else None,
        max_upload_bytes=int(args.max_upload_mb * (1 << 20)), max_pixels=args.max_pixels,
        max_images=args.max_images, request_timeout=args.request_timeout, max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms, engine=args.engine, use_gpu=args.use_gpu, access_log=args.access_log,
        inference_model=args.inference_model,
        rerank=rerank.Settings.from_args(args))
