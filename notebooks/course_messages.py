"""Every message the course's code prints, in each language of the course (docs/course.md).

The lessons' code cells are identical in every language, so a check cell never holds its
message: it names a key (``course.expect(ok, "02.memory.hint")``) and ``course`` prints the
text in the reader's language. Keys: ``env.*`` the environment check, ``exercise.*`` the
exercise helpers, ``NN.topic.what`` a lesson's own (its number first). Messages are
``str.format`` templates (``{name}`` fields filled from the caller's keyword arguments).

A key missing from ``zh`` falls back to English at run time; tests/unit/test_course_sources.py
requires every English key in every other language and every key a lesson uses in English.
"""

from __future__ import annotations

MESSAGES: dict[str, dict[str, str]] = {
    "en": {
        # The environment check (course.check), first cell of every lesson.
        "env.not_linux": "this is not Linux: namespaces, cgroups and overlayfs are Linux "
                         "features",
        "env.not_root": "not running as root: creating namespaces, mounting overlays and "
                        "writing cgroup limits all need root (CAP_SYS_ADMIN). Binder and most "
                        "hosted notebooks run as an unprivileged user, so the demonstrations "
                        "below are shown but not run. Use a root-enabled JupyterHub or a lab VM "
                        "(see docs/deploy.md).",
        "env.no_cgroupfs": "no cgroup filesystem under /sys/fs/cgroup: no limits can be set",
        "env.no_memory": "the memory cgroup controller is missing: --memory will not work",
        "env.cgroups_unreadable": "cannot read the cgroup layout ({error})",
        "env.cgroups_line": "{version}; controllers: {controllers}",
        "env.cgroups_unreadable_line": "cannot read the layout: {error}",
        "env.none": "none",
        "env.available": "available",
        "env.overlay_missing": "not in /proc/filesystems",
        "env.no_overlay": "overlayfs is not available (try `modprobe overlay` as root): images "
                          "other than `--image none` will not work",
        "env.userns_allowed": "allowed",
        "env.userns_disabled": "disabled (--ns user will fail)",
        "env.busybox_missing_line": "missing: apt-get install busybox-static",
        "env.no_busybox": "busybox-static is missing: the `busybox` image cannot be built",
        "env.extra_missing": "missing (the cells that need it are skipped)",
        "env.problems": "What will not work here, and why:",
        "env.runs": "(demonstrations run)",
        "env.shown": "(demonstrations are shown, not run)",
        "env.skipped": "[skipped: containers cannot run here -- see the first cell]",
        # course.side_by_side
        "table.host": "host",
        "table.container": "container",
        "table.same?": "same?",
        "table.same": "same",
        "table.different": "DIFFERENT",
        # The exercise helpers (course.answered, course.expect).
        "exercise.blank": "✎ Your turn: fill in the answer cell above, run it, then run this "
                          "cell again.",
        "exercise.ok": "✓ Correct.",
        "exercise.not_yet": "✗ Not yet: {hint}",
        "exercise.no_solution": "the instructor edition ran this check on a blank answer: the "
                                "exercise has no solution cell (tag it `solution`), or it did "
                                "not set {names}",
        "exercise.wrong_solution": "the solution cell's answer fails its own check: {hint}",
        # 01-namespaces
        "01.caps.held": "{n} capabilities in CapEff: {names}",
        "01.caps.default": "exactly Docker's default set: no SYS_ADMIN, no NET_ADMIN",
        "01.caps.other": "not Docker's default set",
        "01.owners.container": "the container's user namespace: {ns}",
        "01.owners.host": "the host's user namespace:      {ns}",
        "01.owners.line": "  {name:<5} is owned by {owner}",
        "01.ns.unknown": "your set holds a name that is not a namespace type; the names are "
                         "those of /proc/self/ns: {names}",
        "01.ns.shared": "your set names a namespace that the container shares with the host: "
                        "nbcontainer creates no namespace the container does not need",
        "01.ns.missed": "the container has at least one namespace of its own that your set "
                        "leaves out: besides what --ns asks for, starting the container on "
                        "its image needs more",
        "01.ns.ok": "✓ Correct: the container's own namespaces are {own}.",
        "01.prop.unknown": "{value!r} is not a value of unshare's --propagation (see "
                           "unshare(1))",
        "01.prop.no_mount": "the nested namespace could not mount its tmpfs, so the check "
                            "proves nothing; the container said: {output}",
        "01.prop.leaked": "the tmpfs mounted in the nested namespace showed up in the outer "
                          "one: with that propagation, mount events still travel outwards",
        "01.prop.ok": "✓ Correct: the tmpfs stayed in the nested namespace; the outer one "
                      "never saw it.",
        # 02-cgroups
        "02.v2.not_here": "cgroup v1 here: {path} has {files}, and no cgroup.subtree_control; "
                          "v1 has no rule against processes in a cgroup that has children "
                          "(run this notebook on a cgroup v2 machine to see the rule)",
        "02.compare.line": "--memory {limit:>4} --memory-swap {limit:>4}: {outcome}, "
                           "peak {peak} MiB",
        "02.cpu.inside": "inside: the loop used {share:.0%} of one core",
        "02.cpu.throttled": "the host's cpu.stat: the quota throttled the loop in "
                            "nr_throttled of its nr_periods",
        "02.cpu.busy": "the host's cpu.stat: never throttled: the machine was busy, so the "
                       "loop got less CPU than its quota",
        "02.compare.oom": "OOM-killed",
        "02.memory.unreadable": "{limit!r} is not a memory size nbcontainer accepts: "
                                "{problem}",
        "02.memory.too_small": "under {limit} allocating 120 MiB failed ({outcome}): the "
                               "limit must leave room for more than the bytearray",
        "02.memory.too_big": "{limit} lets the allocation through (peak {peak} MiB), but it "
                             "is more than twice 120 MiB: find a tighter limit",
        "02.memory.ok": "✓ Correct: 120 MiB allocated under {limit} (peak {peak} MiB).",
        "02.dir.wrong": "your cgroup_dir gives a directory that is not the container's cgroup "
                        "for: {controllers} (your answers: {answers})",
        "02.dir.ok": "✓ Correct: your directories are the container's cgroups.",
    },
    "zh": {
        "env.not_linux": "这不是 Linux：命名空间、cgroup 和 overlayfs 都是 Linux 的功能",
        "env.not_root": "没有以 root 身份运行：创建命名空间、挂载 overlay、"
                        "写 cgroup 限制都需要 root（CAP_SYS_ADMIN）。"
                        "Binder 和大多数托管的笔记本服务以普通用户运行，"
                        "所以下面的演示只展示、不运行。"
                        "请使用允许 root 的 JupyterHub 或实验虚拟机（见 docs/deploy.md）。",
        "env.no_cgroupfs": "/sys/fs/cgroup 下没有 cgroup 文件系统：无法设置任何限制",
        "env.no_memory": "缺少 memory cgroup 控制器：--memory 无法使用",
        "env.cgroups_unreadable": "无法读取 cgroup 布局（{error}）",
        "env.cgroups_line": "{version}；控制器：{controllers}",
        "env.cgroups_unreadable_line": "无法读取布局：{error}",
        "env.none": "无",
        "env.available": "可用",
        "env.overlay_missing": "不在 /proc/filesystems 中",
        "env.no_overlay": "overlayfs 不可用（以 root 身份试试 `modprobe overlay`）："
                          "除 `--image none` 以外的镜像都无法使用",
        "env.userns_allowed": "允许",
        "env.userns_disabled": "已禁用（--ns user 会失败）",
        "env.busybox_missing_line": "缺失：apt-get install busybox-static",
        "env.no_busybox": "缺少 busybox-static：无法构建 `busybox` 镜像",
        "env.extra_missing": "缺失（需要它的单元格会跳过）",
        "env.problems": "这里有哪些不能用，以及原因：",
        "env.runs": "（演示会运行）",
        "env.shown": "（演示只展示、不运行）",
        "env.skipped": "[已跳过：这里无法运行容器——见第一个单元格]",
        "table.host": "宿主机",
        "table.container": "容器",
        "table.same?": "相同？",
        "table.same": "相同",
        "table.different": "不同",
        "exercise.blank": "✎ 轮到你了：填写上面的答案单元格并运行，然后再运行这个单元格。",
        "exercise.ok": "✓ 正确。",
        "exercise.not_yet": "✗ 还不对：{hint}",
        "exercise.no_solution": "教师版在空白答案上运行了这个检查：这道练习没有答案单元格"
                                "（给它加上 `solution` 标签），或者答案没有设置 {names}",
        "exercise.wrong_solution": "答案单元格的答案没有通过它自己的检查：{hint}",
        # 01-namespaces
        "01.caps.held": "CapEff 中有 {n} 项能力：{names}",
        "01.caps.default": "恰好是 Docker 的默认能力集：没有 SYS_ADMIN，也没有 NET_ADMIN",
        "01.caps.other": "不是 Docker 的默认能力集",
        "01.owners.container": "容器的 user 命名空间：{ns}",
        "01.owners.host": "宿主机的 user 命名空间：{ns}",
        "01.owners.line": "  {name:<5} 的所有者是 {owner}",
        "01.ns.unknown": "你的集合里有一个名字不是命名空间类型；可选的名字就是 /proc/self/ns "
                         "中的那些：{names}",
        "01.ns.shared": "你的集合列出了一个容器与宿主机共用的命名空间："
                        "nbcontainer 不会创建容器用不到的命名空间",
        "01.ns.missed": "容器至少还有一个自己的命名空间没在你的集合里：除了 --ns 要求的之外，"
                        "让容器在它的镜像上启动还需要别的",
        "01.ns.ok": "✓ 正确：容器自己的命名空间是 {own}。",
        "01.prop.unknown": "{value!r} 不是 unshare 的 --propagation 选项的取值"
                           "（见 unshare(1)）",
        "01.prop.no_mount": "嵌套的命名空间没能挂载它的 tmpfs，所以这个检查什么也证明不了；"
                            "容器的输出是：{output}",
        "01.prop.leaked": "在嵌套命名空间里挂载的 tmpfs 出现在了外层命名空间中："
                          "用这种传播类型，挂载事件仍会向外传播",
        "01.prop.ok": "✓ 正确：tmpfs 留在了嵌套的命名空间里，外层从未看到它。",
        # 02-cgroups
        "02.v2.not_here": "这里是 cgroup v1：{path} 中有 {files}，没有 cgroup.subtree_control；"
                          "v1 没有禁止有子 cgroup 的 cgroup 容纳进程的规则"
                          "（在 cgroup v2 的机器上运行本笔记本才能看到这条规则）",
        "02.compare.line": "--memory {limit:>4} --memory-swap {limit:>4}：{outcome}，"
                           "峰值 {peak} MiB",
        "02.cpu.inside": "容器内：循环用掉了一个核的 {share:.0%}",
        "02.cpu.throttled": "宿主机上的 cpu.stat：在 nr_periods 个周期中，"
                            "配额在 nr_throttled 个周期里限制（throttle）了这个循环",
        "02.cpu.busy": "宿主机上的 cpu.stat：从未被限制：机器很忙，"
                       "循环得到的 CPU 本来就少于它的配额",
        "02.compare.oom": "被 OOM 杀死",
        "02.memory.unreadable": "{limit!r} 不是 nbcontainer 接受的内存大小：{problem}",
        "02.memory.too_small": "在 {limit} 下分配 120 MiB 失败了（{outcome}）："
                               "限制除了 bytearray 之外还得留出空间",
        "02.memory.too_big": "{limit} 能让分配成功（峰值 {peak} MiB），"
                             "但超过了 120 MiB 的两倍：找一个更紧的限制",
        "02.memory.ok": "✓ 正确：在 {limit} 下分配了 120 MiB（峰值 {peak} MiB）。",
        "02.dir.wrong": "你的 cgroup_dir 对这些控制器给出的目录不是容器的 cgroup：{controllers}"
                        "（你的答案：{answers}）",
        "02.dir.ok": "✓ 正确：你给出的目录就是容器的 cgroup。",
    },
}
