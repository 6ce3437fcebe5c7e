"""Jasper: the end-to-end encrypted chat engine, in-process (generated uniffi bindings).

Everything is in the generated module `jasper.jasper`, re-exported here; the native library
(`libjasper_ffi.so` / `.dylib` / `jasper_ffi.dll`) must sit next to it.
"""

from .jasper import *  # noqa: F401,F403
