"""Server administration API, in Synapse's ``/_synapse/admin`` shapes (``docs/admin_api.md``).

Every endpoint requires a server admin's access token (403 ``M_FORBIDDEN`` otherwise).
"""

from homeserver.rest.admin.registration_tokens import RegistrationTokenServlets
from homeserver.rest.admin.users import AdminUserServlets, require_admin

__all__ = ["AdminUserServlets", "RegistrationTokenServlets", "require_admin"]
