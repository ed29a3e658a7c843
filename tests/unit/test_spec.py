"""Option parsing is pure: sizes, namespace lists, volumes, users, caps, and their messages."""

from __future__ import annotations

import re

import pytest

from nbcontainer.errors import UsageError
from nbcontainer.spec import (
    DEFAULT_CAPS,
    DEFAULT_NAMESPACES,
    NAMESPACES,
    Port,
    format_size,
    make_spec,
    parse_cpuset,
    parse_namespaces,
    parse_publish,
    parse_size,
    parse_volume,
    spec_from_dict,
    spec_to_dict,
)


@pytest.mark.parametrize("text, value", [
    ("512", 512), ("100k", 100 << 10), ("100m", 100 << 20), ("1g", 1 << 30), ("1G", 1 << 30),
    ("1.5g", int(1.5 * (1 << 30))), ("64MiB", 64 << 20), ("10mb", 10 << 20),
])
def test_sizes_use_docker_binary_units(text, value):
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["", "lots", "10x", "-5m", "1e9", "m"])
def test_bad_sizes_say_what_is_allowed(text):
    with pytest.raises(UsageError, match="e.g. 512, 100k, 100m, 1g"):
        parse_size(text)


def test_namespaces_lists_all_none_and_unknown():
    assert parse_namespaces("uts,pid") == {"uts", "pid"}
    assert parse_namespaces("all") == frozenset(NAMESPACES)
    assert parse_namespaces("none") == frozenset()
    assert parse_namespaces("mnt,network") == {"mount", "net"}
    with pytest.raises(UsageError, match="unknown namespace 'time'"):
        parse_namespaces("pid,time")
    assert make_spec(["true"]).namespaces == DEFAULT_NAMESPACES | {"net"}  # the bridge
    assert make_spec(["true"], ns="uts").namespaces == {"uts"}  # a list stays literal


def test_net_mode_toggles_the_network_namespace():
    assert "net" in make_spec(["true"], net="none").namespaces
    assert "net" not in make_spec(["true"], ns="all", net="host").namespaces
    assert make_spec(["true"], ns="net").net == "none"
    assert make_spec(["true"]).net == "bridge"  # the default: a private network


def test_an_explicit_ns_list_stays_literal_without_net():
    bare = make_spec(["true"], ns="uts,net")
    assert bare.net == "none" and bare.network is None and "net" in bare.namespaces
    hosted = make_spec(["true"], ns="uts,pid")
    assert hosted.net == "host" and "net" not in hosted.namespaces
    assert make_spec(["true"], ns="uts", net="bridge").network == "bridge"


def test_net_container_joins_a_named_container():
    spec = make_spec(["true"], net="container:web")
    assert spec.net_container == "web" and spec.network is None and spec.net == "container:web"
    assert "net" in spec.namespaces
    for bad in ("container:", "container:bad/name"):
        with pytest.raises(UsageError, match="container"):
            make_spec(["true"], net=bad)


@pytest.mark.parametrize("text, port", [
    ("8080:80", Port("127.0.0.1", 8080, 80, "tcp")),
    ("0.0.0.0:8080:80", Port("0.0.0.0", 8080, 80, "tcp")),
    ("127.0.0.2:53:5353/udp", Port("127.0.0.2", 53, 5353, "udp")),
    (":1:2", Port("0.0.0.0", 1, 2, "tcp")),
])
def test_publish_syntax(text, port):
    assert parse_publish(text) == port


@pytest.mark.parametrize("text, fragment", [
    ("80", "expected [HOSTIP:]HOSTPORT:CTRPORT"),
    ("1:2:3:4", "invalid host address"),
    ("8080:80/sctp", "invalid protocol 'sctp'"),
    ("0:80", "invalid host port '0'"),
    ("8080:70000", "invalid container port '70000'"),
    ("::1:8080:80", "invalid host address"),
    ("x:8080:80", "invalid host address 'x'"),
])
def test_publish_bad_syntax_is_one_sentence(text, fragment):
    with pytest.raises(UsageError, match=re.escape(fragment)):
        parse_publish(text)


def test_publish_needs_a_network_and_distinct_host_ports():
    assert make_spec(["true"], publish=["8080:80"]).publish == (Port("127.0.0.1", 8080, 80),)
    for net in ("host", "none", "container:web"):
        with pytest.raises(UsageError, match="-p needs a network"):
            make_spec(["true"], net=net, publish=["8080:80"])
    with pytest.raises(UsageError, match="published twice"):
        make_spec(["true"], publish=["8080:80", "8080:81"])
    assert len(make_spec(["true"], publish=["8080:80", "8080:80/udp"]).publish) == 2


def test_net_bridge_or_a_network_name_gives_a_netns_and_the_network():
    spec = make_spec(["true"], net="bridge")
    assert "net" in spec.namespaces and spec.network == "bridge" and spec.net == "bridge"
    assert make_spec(["true"], net="lab").network == "lab"
    assert make_spec(["true"], net="none").network is None
    with pytest.raises(UsageError, match="--net: invalid mode 'a/b'"):
        make_spec(["true"], net="a/b")


def test_the_network_survives_the_json_form():
    spec = make_spec(["true"], net="lab")
    assert spec_from_dict(spec_to_dict(spec)) == spec


def test_rootfs_always_brings_a_mount_namespace():
    assert "mount" in make_spec(["true"], ns="pid", image="busybox").effective_namespaces()
    assert "mount" not in make_spec(["true"], ns="pid", image="none").effective_namespaces()


def test_volumes():
    v = parse_volume("/data:/mnt/data:ro")
    assert (v.host, v.container, v.readonly) == ("/data", "/mnt/data", True)
    for bad, reason in (("data:/x", "both paths must be absolute"), ("/x", "invalid volume"),
                        ("/a:/b:rx", "invalid mode 'rx'"),
                        ("/a:/../b", "must be a directory below / without '..'"),
                        ("/a:/", "must be a directory below / without '..'")):
        with pytest.raises(UsageError, match=f"^-v: .*{re.escape(reason)}"):
            parse_volume(bad)


def test_memory_swap_rules():
    spec = make_spec(["true"], memory="100m", memory_swap="200m")
    assert spec.limits.memory_swap == 200 << 20
    assert make_spec(["true"], memory="100m", memory_swap="-1").limits.memory_swap == -1
    with pytest.raises(UsageError, match="at least --memory"):
        make_spec(["true"], memory="100m", memory_swap="50m")
    with pytest.raises(UsageError, match="needs --memory"):
        make_spec(["true"], memory_swap="50m")


def test_capabilities_follow_docker():
    assert make_spec(["true"]).capabilities() == frozenset(DEFAULT_CAPS)
    caps = make_spec(["true"], cap_add=["cap_sys_admin"], cap_drop=["CHOWN"]).capabilities()
    assert "SYS_ADMIN" in caps and "CHOWN" not in caps
    assert make_spec(["true"], cap_drop=["ALL"]).capabilities() == frozenset()
    assert len(make_spec(["true"], privileged=True).capabilities()) > 30


def test_cpuset_and_misc_validation():
    assert parse_cpuset("0-1,3") == "0-1,3"
    for bad, reason in (("", "empty CPU list"), ("a", "invalid CPU list 'a'"),
                        ("3-1", "range '3-1' runs backwards"),
                        ("1--2", "invalid CPU list '1--2'")):
        with pytest.raises(UsageError, match=f"^--cpuset-cpus: {re.escape(reason)}"):
            parse_cpuset(bad)
    with pytest.raises(UsageError, match="--pids-limit"):
        make_spec(["true"], pids_limit="0")
    with pytest.raises(UsageError, match="--cpu-shares"):
        make_spec(["true"], cpu_shares="1")
    with pytest.raises(UsageError, match="--timeout"):
        make_spec(["true"], timeout="-1")
    with pytest.raises(UsageError, match="--name"):
        make_spec(["true"], name="bad name")
    with pytest.raises(UsageError, match="-w"):
        make_spec(["true"], workdir="relative")


def test_spec_round_trips_through_json_form():
    spec = make_spec(["sh", "-c", "x"], image="busybox", memory="100m", cpus="0.5",
                     ns="pid,net", env=["A=1"], volumes=["/tmp:/t:ro"], user="1:2",
                     cap_add=["NET_ADMIN"], timeout="3", name="n1", init=True)
    assert spec_from_dict(spec_to_dict(spec)) == spec


def test_format_size():
    assert format_size(100 << 20) == "100 MiB"
    assert format_size(None) == "unlimited"
    assert format_size(1536) == "1.5 KiB"


def test_hostname_needs_a_uts_namespace():
    with pytest.raises(UsageError, match="uts"):
        make_spec(["true"], ns="pid", hostname="box")
    assert make_spec(["true"], ns="uts", hostname="box").hostname == "box"


def test_cpus_beyond_the_cpus_there_are_is_refused_in_dockers_words():
    import os

    from nbcontainer.spec import available_cpus, parse_cpus

    n = len(os.sched_getaffinity(0))
    assert available_cpus() == n
    assert parse_cpus(str(n)) == n
    with pytest.raises(UsageError, match=rf"range of CPUs is from 0.01 to {n}.00, as there "
                                         rf"are only {n} CPUs available"):
        parse_cpus("1000" if n < 1000 else str(n + 1))
