#!/usr/bin/env python3
"""A static file server for hearth's pages, tests and models, bound to 127.0.0.1.

Adds the headers the pages need: CORS (tests fetch the model from another port), the right
type for .wasm and .mjs, no caching of HTML, and cross-origin isolation (COOP same-origin,
COEP require-corp, and CORP on everything served), which a page needs for SharedArrayBuffer
and so for wasm threads. `--mount /models=models` serves another
directory under a path; a request with `isolate=0` in its query is served without COOP and
COEP. Usage: serve.py DIR [--port N] [--mount /PREFIX=DIR ...]
"""
import argparse
import functools
import http.server
import os
import posixpath
import urllib.parse


class Handler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {
        **http.server.SimpleHTTPRequestHandler.extensions_map,
        ".wasm": "application/wasm",
        ".js": "text/javascript",
        ".mjs": "text/javascript",
        ".gguf": "application/octet-stream",
        ".bpk": "application/octet-stream",
    }

    mounts = {}

    def translate_path(self, path):
        clean = posixpath.normpath(urllib.parse.unquote(path.split("?", 1)[0].split("#", 1)[0]))
        for prefix, directory in self.mounts.items():
            if clean == prefix or clean.startswith(prefix + "/"):
                rest = [p for p in clean[len(prefix):].split("/") if p and p not in (".", "..")]
                return os.path.join(directory, *rest)
        return super().translate_path(path)

    def end_headers(self):
        self.send_header("Access-Control-Allow-Origin", "*")
        self.send_header("Cross-Origin-Resource-Policy", "cross-origin")
        # `?isolate=0` on a page: served without isolation (tests of the one-thread fallback).
        if "isolate=0" not in self.path:
            self.send_header("Cross-Origin-Opener-Policy", "same-origin")
            self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        if self.path.endswith((".html", "/")):
            self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, fmt, *args):
        pass


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("root")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--mount", action="append", default=[], metavar="/PREFIX=DIR")
    args = parser.parse_args()
    for mount in args.mount:
        prefix, _, directory = mount.partition("=")
        if not prefix.startswith("/") or not directory:
            parser.error(f"--mount wants /PREFIX=DIR, got {mount}")
        Handler.mounts[prefix.rstrip("/")] = os.path.abspath(directory)
    handler = functools.partial(Handler, directory=args.root)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), handler)
    print(f"serving {args.root} at http://127.0.0.1:{args.port}/", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
