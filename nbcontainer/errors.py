"""The exceptions nbcontainer raises: one base, each carrying the facts a user needs.

Every expected failure is one of these, and its ``str()`` is one sentence a user can act on.
The front ends (CLI, magics, kernel) print that sentence and never a traceback.
"""

from __future__ import annotations


class ContainerError(Exception):
    """Base of every nbcontainer error; the CLI maps it to exit status 125."""

    exit_status = 125


class UsageError(ContainerError):
    """A bad option or argument: says what is wrong and what would be right."""


class NotRootError(ContainerError):
    """nbcontainer needs root for namespaces, mounts and cgroups."""


class FeatureMissingError(ContainerError):
    """The kernel lacks something a container needs (overlayfs, a controller, a namespace)."""


class ImageNotFoundError(ContainerError):
    """No image of that name in the store or among the built-ins."""


class ContainerNotFoundError(ContainerError):
    """No container of that name or id."""


class ContainerStateError(ContainerError):
    """The container is not in a state that allows the operation (e.g. exec when stopped)."""


class SetupError(ContainerError):
    """The container could not be set up (a mount, a namespace, the cgroup); carries the cause."""


class CgroupError(ContainerError):
    """A cgroup operation failed; carries the path and the errno text."""


class NetworkError(ContainerError):
    """A network could not be created, used or removed (bridge, address, NAT); says why."""


class ImageError(ContainerError):
    """An image or layer could not be read, imported, built or stored."""


class UnsafeLayerError(ImageError):
    """A layer tried to write outside its root or carried a forbidden entry."""


class RegistryError(ImageError):
    """A registry refused, lacked or garbled what a pull/push/login asked for; says which."""
