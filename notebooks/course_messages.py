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
        # Lesson 03: union filesystems.
        "03.seed.mount_failed": "the kernel refused an overlay mount with these options "
                                "({error}): an overlay mount takes lowerdir=, upperdir= and "
                                "workdir=, separated by commas, each naming existing "
                                "directories",
        "03.seed.missing": "the mount worked, but mnt lacks some of the seed's files: every "
                           "layer of the seed's dirs= list must be in it, in one role or "
                           "another",
        "03.seed.order": "the mount worked, but a lower image layer wins over a higher one in "
                         "mnt: look again at which end of the list overlayfs puts on top",
        "03.seed.upper": "the mount worked, but writing to mnt/image-layer4.txt did not leave "
                         "its copy in container-layer with image-layer4 untouched: which "
                         "layer did the seed make writable?",
        "03.whiteouts.not_a_set": "answer with a set of path strings",
        "03.whiteouts.extra": "some of your paths are not whiteouts in the upper directory: "
                              "which of the command's effects is a deletion of something the "
                              "image has?",
        "03.whiteouts.missing": "some whiteouts of the upper directory are not in your set: "
                                "every name deleted from the image leaves one",
        # Lesson 04: write your own union filesystem.
        "04.aufs.left": "AUFS marker files are still in the layers ({left}): overlayfs would "
                        "show them as ordinary files",
        "04.aufs.differ": "the converted layers merge differently from our overlay-form "
                          "layers at {paths}",
        "04.patch.motd": "/etc/motd is still there in the union of your layer over the other "
                         "three: leaving a name out of a layer does not hide it below",
        "04.patch.greet": "/bin/greet is not a file in the union of your layer over the other "
                          "three",
        "04.patch.run": "a container of handmade-patched ran `test ! -e /etc/motd && "
                        "/bin/greet` and did not print just hi ({status}; it printed: {out})",
        # Lesson 05: images and layers.
        "05.commit.sizes": "the commit's own layer: {top} bytes; the seed's flat tar would "
                           "hold about {total} bytes, the whole image again",
        "05.layers.wrong": "not that many: for each instruction ask whether it changes a file "
                           "of the image, and remember the base image's own layers",
        "05.cache.not_set": "answer with a set of variant letters",
        "05.cache.extra": "some of the variants you chose ran their RUN step again: what does "
                          "each of them change in that step's cache key?",
        "05.cache.missing": "some variants that took the RUN step from the cache are not in "
                            "your set: does every edit of the file change that step's key?",
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
        # Lesson 07, build a container yourself: the steps' checks and the two exercises.
        "07.step1.ok": "✓ inside: {name} in {uts}; the host: {host} in {host_uts}; entering the "
                       "child's namespace from the host shows {entered}",
        "07.step2.ok": "✓ {shared} shared mount(s) in the new namespace before "
                       "MS_REC|MS_PRIVATE, none after; the child wrote 'hello' on its tmpfs, "
                       "the host's {scratch} stayed empty",
        "07.step3.ok": "✓ inside: getpid() = 1, /proc/self -> 1, /proc lists only {pids}; the "
                       "host's /proc is untouched and sees that process as PID {host_pid}",
        "07.step4a.ok": "✓ chroot: / was the rootfs {jailed}; after mkdir+chroot+chdir('..') "
                        "the child stood in the host's real / again {escaped}",
        "07.step4b.ok": "✓ pivot_root: the same escape ended where it began, in the rootfs "
                        "{root}; the host's / was out of reach",
        "07.step5.ok": "✓ cgroup {version}: 10 MiB ran, 200 MiB was killed by SIGKILL at the "
                       "{limit} MiB limit ({counters}); the cgroups are gone",
        "07.step6.ok": "✓ unmapped: uid {unmapped} (nobody); mapped: uid 0 with CapEff "
                       "{cap_eff} inside, uid {outside} on the host, and opening the host's "
                       "0600 file failed with {error}",
        "07.step7.ok": "✓ a ({a}) and b ({b}) pinged each other through {bridge} (ports "
                       "{ports}); the bridge and both veth pairs are gone",
        "07.step8.lines": "✓ mini_container.py: {lines} lines ({code} neither blank nor "
                          "comment), standard library only",
        "07.step8.ok": "✓ the mini container: hostname mini, its shell is PID 1, / is the "
                       "rootfs, and its memory cgroup killed the growing shell (status 137); "
                       "nothing left behind",
        "07.tmp.failed": "your private_tmp failed in the child ({error})",
        "07.tmp.not_rootfs": "after your steps, / is not the rootfs: the child still sees the "
                             "host's files (or no busybox)",
        "07.tmp.shared": "/tmp is still the rootfs's own directory: what the container wrote "
                         "there, the host sees in ROOTFS/tmp ({host_tmp})",
        "07.tmp.ok": "✓ inside, /tmp is a filesystem of its own holding {tmp}; the host's "
                     "ROOTFS/tmp stayed empty",
        "07.pids.failed": "your limit_pids failed ({error})",
        "07.pids.unlimited": "the process made all of its 10 children: nothing limited it",
        "07.pids.wrong": "the process made {made} children under a limit of 4: what does the "
                         "limit count, and is the forking process itself among them?",
        "07.pids.ok": "✓ with a limit of 4 the process forked 3 children, and its next fork "
                      "failed",
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
        "03.seed.mount_failed": "内核拒绝了用这些选项做的 overlay 挂载（{error}）："
                                "overlay 挂载需要 lowerdir=、upperdir= 和 workdir=，"
                                "用逗号分隔，每个都指向已存在的目录",
        "03.seed.missing": "挂载成功了，但 mnt 里缺少种子中的某些文件："
                           "种子 dirs= 列表里的每一层都必须出现在挂载中，担任某一种角色",
        "03.seed.order": "挂载成功了，但在 mnt 中一个较低的镜像层盖过了较高的镜像层："
                         "再看看 overlayfs 把列表的哪一端放在最上面",
        "03.seed.upper": "挂载成功了，但写 mnt/image-layer4.txt 之后，"
                         "container-layer 里没有它的副本、或者 image-layer4 被改动了："
                         "种子让哪一层可写？",
        "03.whiteouts.not_a_set": "请用路径字符串组成的集合（set）作答",
        "03.whiteouts.extra": "你的路径中有些在上层目录里并不是 whiteout："
                              "命令的哪些效果是删除了镜像中已有的东西？",
        "03.whiteouts.missing": "上层目录里有些 whiteout 不在你的集合中："
                                "从镜像中删除的每个名字都会留下一个",
        "04.aufs.left": "这些层里仍有 AUFS 的标记文件（{left}）："
                        "overlayfs 会把它们当作普通文件显示",
        "04.aufs.differ": "转换后的层在 {paths} 处的合并结果与我们 overlay 形式的层不同",
        "04.patch.motd": "在你的层叠加到另外三层之上的联合视图里，/etc/motd 仍然存在："
                         "一个层里不写某个名字，并不能遮住下层的它",
        "04.patch.greet": "在你的层叠加到另外三层之上的联合视图里，/bin/greet 不是一个文件",
        "04.patch.run": "一个 handmade-patched 镜像的容器运行了 `test ! -e /etc/motd && "
                        "/bin/greet`，但输出的不只是 hi（{status}；它输出了：{out}）",
        "05.commit.sizes": "这次 commit 自己的层：{top} 字节；种子那种扁平的 tar 包"
                           "会装下大约 {total} 字节，也就是把整个镜像再存一遍",
        "05.layers.wrong": "不是这个数：逐条指令问一问它是否改变了镜像里的文件，"
                           "别忘了基础镜像自己的层",
        "05.cache.not_set": "请用变体字母组成的集合（set）作答",
        "05.cache.extra": "你选的变体中有些重新运行了它们的 RUN 步骤："
                          "它们各自改变了这一步缓存键里的什么？",
        "05.cache.missing": "有些从缓存中取得 RUN 步骤的变体不在你的集合里："
                            "对文件的每一处修改都会改变这一步的键吗？",
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
        "07.step1.ok": "✓ 里面：{name}，在 {uts} 中；宿主机：{host}，在 {host_uts} 中；"
                       "从宿主机进入子进程的命名空间看到的是 {entered}",
        "07.step2.ok": "✓ MS_REC|MS_PRIVATE 之前新命名空间里有 {shared} 个共享挂载，"
                       "之后一个也没有；"
                       "子进程在它的 tmpfs 上写了 'hello'，宿主机的 {scratch} 仍然是空的",
        "07.step3.ok": "✓ 里面：getpid() = 1，/proc/self -> 1，/proc 只列出 {pids}；"
                       "宿主机的 /proc 没有变，在宿主机上这个进程是 PID {host_pid}",
        "07.step4a.ok": "✓ chroot：/ 曾是 rootfs {jailed}；mkdir+chroot+chdir('..') 之后，"
                        "子进程又站在了宿主机真正的 / 里 {escaped}",
        "07.step4b.ok": "✓ pivot_root：同样的逃逸停在了原地，仍在 rootfs {root} 里；"
                        "宿主机的 / 够不着了",
        "07.step5.ok": "✓ cgroup {version}：10 MiB 运行成功，200 MiB 在 {limit} MiB 的限制处"
                       "被 SIGKILL 杀死（{counters}）；这些 cgroup 都已删除",
        "07.step6.ok": "✓ 未映射时：uid {unmapped}（nobody）；映射之后：里面是 uid 0，CapEff 为 "
                       "{cap_eff}，宿主机上是 uid {outside}，打开宿主机上 0600 的文件失败：{error}",
        "07.step7.ok": "✓ a（{a}）和 b（{b}）通过 {bridge}（端口 {ports}）互相 ping 通了；"
                       "网桥和两对 veth 都已删除",
        "07.step8.lines": "✓ mini_container.py：{lines} 行（其中 {code} 行既不是空行也不是注释），"
                          "只用标准库",
        "07.step8.ok": "✓ 迷你容器：主机名是 mini，它的 shell 是 PID 1，/ 是 rootfs，"
                       "它的 memory cgroup 杀死了不断增长的 shell（状态 137）；什么也没留下",
        "07.tmp.failed": "你的 private_tmp 在子进程里失败了（{error}）",
        "07.tmp.not_rootfs": "执行你的步骤之后，/ 不是 rootfs：子进程仍然看得到宿主机的文件"
                             "（或者看不到 busybox）",
        "07.tmp.shared": "/tmp 仍然是 rootfs 自己的目录：容器在里面写的东西，"
                         "宿主机在 ROOTFS/tmp 里看得到（{host_tmp}）",
        "07.tmp.ok": "✓ 在里面，/tmp 是一个独立的文件系统，里面有 {tmp}；"
                     "宿主机的 ROOTFS/tmp 仍然是空的",
        "07.pids.failed": "你的 limit_pids 失败了（{error}）",
        "07.pids.unlimited": "这个进程把 10 个子进程全都创建出来了：什么也没有限制它",
        "07.pids.wrong": "在限制为 4 的情况下，这个进程创建了 {made} 个子进程："
                         "这个限制数的是什么？正在 fork 的进程自己算不算在内？",
        "07.pids.ok": "✓ 限制为 4 时，这个进程 fork 出 3 个子进程，下一次 fork 失败了",
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
