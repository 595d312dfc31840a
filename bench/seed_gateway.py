"""The seed's API gateway, for bench/gateway.sh: proxy_request exactly as the user's design
document writes it (../shared/seed/000_bab7bc5f19666c71.txt, section 1, "Beispiel für
API-Gateway-Integration"), on Starlette and httpx, served by uvicorn.

The seed leaves three names undefined; here they are the simplest honest versions:
  - get_service_url(name): round-robin over a static table, SEED_SERVICES
    ("articles_api=http://127.0.0.1:P1,http://127.0.0.1:P2;charges_api=..."), the same
    instances the other proxies get;
  - generate_service_token(name): an HS256 JWT (iss gateway, aud the service, 5 min) signed
    with SERVICE_TOKEN_SECRET, minted once per service and re-minted a minute before expiry
    (as the lotmesh gateway caches its service tokens) rather than signed per request;
  - Response: starlette.responses.Response (the seed uses it without importing it).
One line differs from the seed: it passes content=None to client.get(), which httpx's get()
and delete() do not take (TypeError: every GET would be a 500); here content is passed only
when there is a body. Everything else is the seed's code: a new httpx.AsyncClient per request (so no keep-alive to
the backend), the headers copied but for host and content-length, the query as a dict, the
upstream's headers relayed with its body. GET /health is added for readiness only.

  SEED_SERVICES=... SERVICE_TOKEN_SECRET=... uvicorn seed_gateway:gateway_app --app-dir bench ...
"""
import base64
import hashlib
import hmac
import itertools
import json
import os
import time

import httpx
from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


def _table():
    out = {}
    for item in os.environ.get("SEED_SERVICES", "").split(";"):
        name, _, urls = item.partition("=")
        if name and urls:
            out[name.strip()] = itertools.cycle([u.strip().rstrip("/") for u in urls.split(",")])
    return out


_SERVICES = _table()
_SECRET = os.environ.get("SERVICE_TOKEN_SECRET", "").encode()
_TOKENS = {}


def get_service_url(service_name):
    urls = _SERVICES.get(service_name)
    return next(urls) if urls else None


def _b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def generate_service_token(service_name):
    now = int(time.time())
    tok, exp = _TOKENS.get(service_name, (None, 0))
    if tok and exp - 60 > now:
        return tok
    exp = now + 300
    head = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    body = _b64(json.dumps({"iss": "gateway", "aud": service_name, "sub": "seed-gateway",
                            "scope": "read write", "iat": now, "exp": exp},
                           separators=(",", ":")).encode())
    sig = _b64(hmac.new(_SECRET, f"{head}.{body}".encode(), hashlib.sha256).digest())
    tok = f"{head}.{body}.{sig}"
    _TOKENS[service_name] = (tok, exp)
    return tok


# ---- the seed's code, as written --------------------------------------------------------------

async def proxy_request(request):
    service_name = request.path_params["service"]
    path = request.path_params["path"]

    # Service-Discovery: Service-Endpunkt ermitteln
    service_url = get_service_url(service_name)
    if not service_url:
        return JSONResponse({"error": f"Service {service_name} not found"}, status_code=404)

    # Request an Service weiterleiten
    full_url = f"{service_url}/{path}"

    headers = {k: v for k, v in request.headers.items()
               if k.lower() not in ["host", "content-length"]}

    # JWT-Token für Service-zu-Service-Kommunikation hinzufügen
    headers["Authorization"] = f"Bearer {generate_service_token(service_name)}"

    async with httpx.AsyncClient() as client:
        method = request.method.lower()
        request_func = getattr(client, method)

        # Request-Body für POST/PUT/PATCH
        body = await request.body() if method in ["post", "put", "patch"] else None

        # the one change: httpx's get() and delete() take no content (TypeError, so the seed
        # as written answers every GET with a 500); pass it only when there is a body
        extra = {"content": body} if body is not None else {}
        response = await request_func(
            full_url,
            headers=headers,
            params=dict(request.query_params),
            **extra
        )

        return Response(
            content=response.content,
            status_code=response.status_code,
            headers=dict(response.headers)
        )


async def health(request):
    return JSONResponse({"status": "ok"})


# Gateway-Routes
routes = [
    Route("/api/{service}/{path:path}", endpoint=proxy_request, methods=["GET", "POST", "PUT", "DELETE"]),
    Route("/health", endpoint=health),
]

gateway_app = Starlette(routes=routes)
