"""Container networks: bridges, addresses, NAT, and the files a container on one gets.

The supervisor's side (below :mod:`nbcontainer.runtime`); the container's own side, its
``eth0`` address and default route, is :func:`nbcontainer._netlink.configure_inside`, run by
its first process.
"""
