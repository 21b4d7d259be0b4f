"""python app.py --mcp: the classify endpoint as an MCP tool, called over MCP (streamable HTTP) by
the mcp package's own client, through the same front door and limits as the page."""

import asyncio
import base64
import json
import urllib.error
import urllib.request

import pytest

from bench.app_server import running_app
from tests.app.conftest import ASSETS


@pytest.fixture(scope="module")
def mcp_server(tmp_path_factory):
    state = tmp_path_factory.mktemp("mcp-state")
    with running_app(ASSETS, state, extra_args=("--mcp", "--rate-limit", "3")) as (url, _):
        yield url + "gradio_api/mcp/"


def call(url, tool=None, arguments=None):
    """(tool names listed, the call's result or None)."""
    from mcp import ClientSession
    from mcp.client.streamable_http import streamablehttp_client

    async def session():
        async with streamablehttp_client(url) as (read, write, _):
            async with ClientSession(read, write) as client:
                await client.initialize()
                names = [tool.name for tool in (await client.list_tools()).tools]
                result = await client.call_tool(tool, arguments) if tool else None
                return names, result

    return asyncio.run(session())


def text(result):
    return " ".join(part.text for part in result.content if getattr(part, "text", None))


def test_the_tool_answers_a_photo_as_the_api_does(mcp_server, example_photos):
    photo = next(iter(example_photos.values()))
    encoded = base64.b64encode(photo.read_bytes()).decode()
    names, result = call(mcp_server, "classify_photo", {"image_base64": f"data:image/jpeg;base64,{encoded}"})
    assert names == ["classify_photo"]  # the page's own endpoints are no tools
    assert not result.isError, text(result)
    answer = json.loads(text(result))
    assert answer["answered_by"] in ("cnn", "fallback", "refused") and answer["verdict"] and "token" not in answer


def test_plain_messages_for_what_it_will_not_take(mcp_server):
    _, result = call(mcp_server, "classify_photo", {"image_base64": "http://169.254.169.254/latest/meta-data"})
    assert result.isError and "does not fetch URLs" in text(result)
    _, result = call(mcp_server, "classify_photo", {"image_base64": "not base64 at all!"})
    assert result.isError and "not valid base64" in text(result)
    _, result = call(mcp_server, "classify_photo", {"image_base64": base64.b64encode(b"GIF89a broken").decode()})
    assert result.isError and "Traceback" not in text(result)
    # A tool of the page's, called by name, is no tool here.
    _, result = call(mcp_server, "on_upload", {"path": "http://example.com/x.jpg"})
    assert result.isError


def test_the_front_door_bounds_mcp_messages_and_closes_the_sse_transport(mcp_server):
    request = urllib.request.Request(mcp_server, data=b"x" * 100, method="POST",
                                     headers={"Content-Type": "application/json", "Content-Length": str(40 * 1024 * 1024)})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 413
    with pytest.raises(urllib.error.HTTPError) as closed:
        urllib.request.urlopen(mcp_server + "sse", timeout=30)
    assert closed.value.code == 404


def test_the_page_limits_hold_for_mcp_clients(mcp_server, example_photos):
    photo = next(iter(example_photos.values()))
    encoded = base64.b64encode(photo.read_bytes()).decode()
    messages = []
    for _ in range(5):  # --rate-limit 3: three pictures a minute
        try:
            _, result = call(mcp_server, "classify_photo", {"image_base64": encoded})
            messages.append(text(result) if result.isError else "answered")
        except Exception as error:  # the front door refused the message itself (429)
            messages.append(f"refused at the door: {error}")
    assert "answered" not in messages[-1] and any("Too many" in m or "refused" in m for m in messages), messages
