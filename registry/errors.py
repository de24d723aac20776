"""Registry errors; the HTTP layer maps them to 404 / 409 / 400."""


class RegistryError(Exception):
    pass


class NotFound(RegistryError):
    pass


class Conflict(RegistryError):
    pass


class InvalidName(RegistryError, ValueError):
    pass
