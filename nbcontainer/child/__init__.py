"""What runs on the container side: the helper and first process (:mod:`.helper`), PID 1
(:mod:`.reaper`), namespaces, the root filesystem and capabilities.

Kept cheap to import: a fresh helper interpreter loads it before every container.
"""
