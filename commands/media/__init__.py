"""Media, on the commands service: uploads to the object store, checked on confirm.

`uploads` (presigned uploads, the confirm that checks size, hash and sniffed type, and
the confirmed reference a send may carry), `multipart` (big files in parts),
`retention` (the sweep of sent media nobody received) and `routes` (the HTTP routes). The bytes
never pass through Parley's processes (docs/media.md).
"""
