"""Client library and CLI for data owners of a MOAI service.

Everything secret stays here: keys are generated locally, the private key never
leaves ``key_dir``, and only evaluation keys and ciphertexts are sent. This
package imports no Django.
"""

from moai_client.client import MoaiClient, Prediction, Session
from moai_client.errors import MoaiApiError, MoaiError, MoaiJobFailed, MoaiTimeout

__all__ = ["MoaiApiError", "MoaiClient", "MoaiError", "MoaiJobFailed", "MoaiTimeout", "Prediction", "Session"]
