"""The any-language bridge: the wire protocol, the process/TCP adapter with its watchdog, and the SDK.

``protocol`` frames messages, ``messages`` parses replies into typed records, ``process`` is the
Gymnasium adapter and watchdog, ``spawn`` and ``reaper`` start and supervise programs, ``sdk`` is what a
Python program imports (NumPy alone). The wire format is docs/protocol.md.
"""
