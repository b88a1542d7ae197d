"""The ``registration:`` section: who may create accounts, and the password policy."""

from __future__ import annotations

import attrs

from homeserver.config._options import (
    BOOL,
    choice,
    integer,
    list_of,
    option,
    section_meta,
    string,
)

REGISTRATION_MODES = ("open", "token", "closed")

# The spec's grammar for registration tokens (client-server API, "Token-authenticated registration").
REGISTRATION_TOKEN = string(
    r"[A-Za-z0-9._~-]{1,64}", "a registration token of 1-64 characters from [A-Za-z0-9._~-]", secret=True
)


@attrs.frozen
class PasswordPolicyConfig:
    """Requirements a new password must meet (enforced on registration and password change)."""

    enabled: bool = option(True, BOOL, "Enforce the policy below; false accepts any non-empty password.")
    minimum_length: int = option(10, integer(minimum=1), "Fewest characters a password may have.")
    require_digit: bool = option(False, BOOL, "Require at least one digit.")
    require_symbol: bool = option(
        False, BOOL, "Require at least one character that is not a letter or digit."
    )
    require_lowercase: bool = option(False, BOOL, "Require at least one lowercase letter.")
    require_uppercase: bool = option(False, BOOL, "Require at least one uppercase letter.")
    forbid_username: bool = option(True, BOOL, "Reject passwords that contain the user's localpart.")


@attrs.frozen
class RegistrationConfig:
    """Account registration settings."""

    mode: str = option(
        "closed",
        choice(*REGISTRATION_MODES),
        "'open': anyone may register; 'token': registration needs a token (m.login.registration_token); "
        "'closed': only admins create accounts (register-user command, admin API).",
    )
    tokens: tuple[str, ...] = option(
        (),
        list_of(REGISTRATION_TOKEN),
        "Registration tokens accepted in 'token' mode (more can be created through the admin API).",
        secret=True,
    )
    guest_access: bool = option(False, BOOL, "Allow guest accounts (kind=guest registration).")
    password_policy: PasswordPolicyConfig = attrs.field(
        factory=PasswordPolicyConfig, metadata=section_meta(PasswordPolicyConfig, "Password requirements.")
    )
