"""Media, on the commands service: uploads to the object store, checked on confirm.

`uploads` (presigned uploads, the confirm that checks size, hash and sniffed type, and
the confirmed reference a send may carry) and `routes` (its HTTP routes). The bytes
never pass through Parley's processes (docs/media.md).
"""
