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
        # Lesson 06, the container kernel: exercise 1 (a profile), exercise 2 (no network).
        "06.profile.refused": "nbcontainer refused those options (its message is above): a "
                              "profile takes the options of `nbcontainer run`, each flag "
                              "followed by its value",
        "06.profile.memory": "the profile allows {memory} of memory, not the 128 MiB the class "
                             "is to fit in",
        "06.profile.swap": "the memory limit is right, but the profile lets the kernel add "
                           "swap on top (memory and swap together: {swap}), so a notebook over "
                           "the limit would go on in swap instead of being OOM-killed",
        "06.profile.unset": "not set (nbcontainer's default)",
        "06.profile.ok": "✓ Correct: course-small allows {memory} of memory and no swap on top "
                         "(memory and swap together: {swap}).",
        "06.net.printed": "your code printed, inside the kernel: {printed}",
        "06.net.raised": "your code failed inside the kernel ({error})",
        "06.net.nothing": "your code printed nothing inside the kernel: end it with a print of "
                          "the list",
        "06.net.not_a_list": "the last line your code printed, {line!r}, is not a Python list "
                             "of names",
        "06.net.wrong": "your list {got} is not the set of interfaces that are up in that "
                        "kernel: check how your code tells an interface that is up from one "
                        "that is merely there",
        "06.net.right": "✓ Your list is right: {got}.",
        "06.net.not_isolated": "the kernel's network is not isolated: up inside: {up}; host "
                               "interfaces visible inside: {host}",
        "06.net.ok": "✓ In the no-network kernel only lo is up (present but down: {down}), and "
                     "none of the host's interfaces is there.",
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
        "06.profile.refused": "nbcontainer 拒绝了这些选项（它的说明在上面）：配置（profile）"
                              "接受的是 `nbcontainer run` 的选项，每个选项后面跟着它的值",
        "06.profile.memory": "这个配置允许 {memory} 内存，而不是全班要求的 128 MiB",
        "06.profile.swap": "内存限制对了，但这个配置让内核在内存之外再加 swap"
                           "（内存加 swap 共 {swap}），超出限制的笔记本会在 swap 里继续运行，"
                           "而不是被 OOM kill",
        "06.profile.unset": "未设置（nbcontainer 的默认值）",
        "06.profile.ok": "✓ 正确：course-small 允许 {memory} 内存，不额外加 swap"
                         "（内存加 swap 共 {swap}）。",
        "06.net.printed": "你的代码在内核里打印了：{printed}",
        "06.net.raised": "你的代码在内核里运行失败（{error}）",
        "06.net.nothing": "你的代码在内核里什么也没打印：最后用 print 打印出这个列表",
        "06.net.not_a_list": "你的代码打印的最后一行 {line!r} 不是由名字组成的 Python 列表",
        "06.net.wrong": "你的列表 {got} 不是这个内核里处于 up 状态的网络接口集合："
                        "检查一下你的代码怎样区分“已经 up 的接口”和“仅仅存在的接口”",
        "06.net.right": "✓ 你的列表是对的：{got}。",
        "06.net.not_isolated": "这个内核的网络没有隔离：里面 up 的接口：{up}；"
                               "里面能看到的宿主机接口：{host}",
        "06.net.ok": "✓ 在没有网络的内核里只有 lo 是 up 的（存在但 down 的：{down}），"
                     "宿主机的接口一个也看不到。",
    },
}
