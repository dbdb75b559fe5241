"""End-to-end encryption in the Python client (docs/e2e.md).

`SecureChat` is what an application uses: one per device, with its key store. Below it,
`sessions` (X3DH and the Double Ratchet, pairwise), `sender_keys` (groups), `keystore`
(secrets encrypted at rest), `safety` (safety numbers).
"""

from client.e2e.keystore import KeyStoreLocked
from client.e2e.secure_chat import SecureChat
from client.e2e.sessions import SessionError

__all__ = ["KeyStoreLocked", "SecureChat", "SessionError"]
