"""Wrong passwords at a Gradio login, throttled: an ASGI middleware for the admin area.

    admin.launch(auth=..., app_kwargs={"middleware": [Middleware(LoginThrottle)]})

Gradio's own /login answers every try at once, so a script can try passwords as fast as the
server answers (27 a second, measured). Here each address may get `per_address` wrong passwords
in a sliding `window_s`, and all addresses together `overall` (an attacker with many addresses,
or many local users, still meets a bound). A try beyond either waits `delay_s` and is refused with
429 without reaching the password check; a right password resets nothing, it just passes.
"""

import asyncio
import json
import threading
import time
from collections import defaultdict, deque


class LoginThrottle:
    def __init__(self, app, per_address=10, overall=30, window_s=60.0, delay_s=1.0, clock=time.monotonic):
        self.app, self.per_address, self.overall = app, per_address, overall
        self.window_s, self.delay_s, self.clock = window_s, delay_s, clock
        self._failures = defaultdict(deque)  # address -> times of its wrong passwords
        self._all = deque()  # times of every wrong password
        self._lock = threading.Lock()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or not scope["path"].rstrip("/").endswith("/login"):
            return await self.app(scope, receive, send)
        address = (scope.get("client") or ("unknown", 0))[0]
        if self._over(address):
            await asyncio.sleep(self.delay_s)
            payload = json.dumps({"error": "Too many wrong passwords; wait a minute and try again."}).encode()
            await send({"type": "http.response.start", "status": 429,
                        "headers": [(b"content-type", b"application/json"), (b"retry-after", str(int(self.window_s)).encode())]})
            return await send({"type": "http.response.body", "body": payload})
        status = {}

        async def watched(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        await self.app(scope, receive, watched)
        if status.get("code", 500) >= 400:
            self._failed(address)

    def _over(self, address):
        with self._lock:
            now = self.clock()
            for times in (self._failures.get(address), self._all):
                while times and times[0] <= now - self.window_s:
                    times.popleft()
            if address in self._failures and not self._failures[address]:
                del self._failures[address]
            return len(self._failures.get(address, ())) >= self.per_address or len(self._all) >= self.overall

    def _failed(self, address):
        with self._lock:
            now = self.clock()
            self._failures[address].append(now)
            self._all.append(now)
            if len(self._failures) > 10_000:  # forget addresses with no recent failure
                for key in [a for a, t in self._failures.items() if not t or t[-1] <= now - self.window_s]:
                    del self._failures[key]
