"""The classify endpoint as an MCP tool (python app.py --mcp), served by Gradio's own MCP server
at /gradio_api/mcp/ (streamable HTTP) on the same port and --share link as the page.

    answer = classify_for_mcp(service, image_base64, client)   # app.classify_photo, the tool, calls it
    only_our_tool(demo)                        # after launch: the page's own endpoints are no tools

The picture comes as base64 (a data: URI or the bare encoding), never as a URL: the server
fetches nothing a visitor names. It goes through the service like any upload (service.public:
the per-client limits, the decode budget) and the answer is the JSON API's (web.api).
"""

import base64
import binascii
import io

from bundle.images import MAX_UPLOAD_BYTES, TOO_LARGE, Busy, ImageError
from service.public import VisitorError
from web.api import answer_json

TOOL = "classify_photo"
# Base64 takes 4 characters for 3 bytes.
MAX_ENCODED_CHARACTERS = (MAX_UPLOAD_BYTES + 2) // 3 * 4


class ToolError(ValueError):
    """A plain message for the MCP client (app.py raises it as gr.Error)."""


def classify_for_mcp(service, image_base64, client):
    """One MCP tool call: the JSON API's answer without the gallery and the token (corrections are
    the page's and the JSON API's), or ToolError with a plain message."""
    picture = decode_picture(image_base64)
    try:
        result = service.classify(picture, client, "mcp")
    except (VisitorError, Busy, ImageError) as error:
        raise ToolError(str(error)) from None
    answer = answer_json(result.prediction, result.token)
    del answer["gallery"], answer["token"]
    return answer


def decode_picture(text):
    """A data: URI or bare base64 -> the file's bytes, as a file object; ToolError with a plain message."""
    if not isinstance(text, str) or not text.strip():
        raise ToolError("Send the picture as base64 (image_base64).")
    text = text.strip()
    if text.startswith(("http://", "https://")):
        raise ToolError("Send the picture itself as base64: this server does not fetch URLs.")
    if text.startswith("data:"):
        header, _, text = text.partition(",")
        if not header.endswith(";base64"):
            raise ToolError("A data: URI must be base64-encoded (data:image/jpeg;base64,...).")
    if len(text) > MAX_ENCODED_CHARACTERS + 4:
        raise ToolError(TOO_LARGE)
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ToolError("The picture is not valid base64.") from None
    if not data:
        raise ToolError("The file is empty.")
    if len(data) > MAX_UPLOAD_BYTES:
        raise ToolError(TOO_LARGE)
    return io.BytesIO(data)


def only_our_tool(demo):
    """Gradio's MCP server makes every named endpoint a tool; the page's own (its upload, which
    takes a file URL, and the relabelling) are not for MCP clients: only TOOL stays, for listing
    and for calling."""
    server = getattr(demo, "mcp_server_obj", None)
    if server is not None:
        server.tool_to_endpoint = {name: endpoint for name, endpoint in server.tool_to_endpoint.items()
                                   if endpoint == f"/{TOOL}"}
