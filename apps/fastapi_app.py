"""A FastAPI app served by stage 6 (`pip install fastapi`): the same ASGI
protocol a hand-written app speaks, seen through a framework (Starlette
routing, pydantic validation, anyio's thread pool for plain `def` routes).

    stage6-asgi apps.fastapi_app:app
"""

import asyncio
import os
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import PlainTextResponse, StreamingResponse
from pydantic import BaseModel


@asynccontextmanager
async def lifespan(app):
    # What is yielded becomes request.state in every request (lifespan state).
    yield {"greeting": "hello from the lifespan", "pid": os.getpid()}


app = FastAPI(lifespan=lifespan)


class Item(BaseModel):
    name: str
    price: float


@app.get("/", response_class=PlainTextResponse)
async def hello():
    return "Hello, World!\n"


@app.get("/items/{item_id}")
async def read_item(item_id: int, q: str | None = None):
    return {"item_id": item_id, "q": q}


@app.post("/items")
async def create_item(item: Item):
    return {"name": item.name, "price_with_tax": round(item.price * 1.2, 2)}


@app.get("/sync")
def sync_route():
    # A plain `def` route: FastAPI runs it in anyio's thread pool.
    return {"ran_in": "thread pool"}


@app.get("/io")
async def io(ms: int = 10):
    await asyncio.sleep(ms / 1000)
    return {"slept_ms": ms}


@app.get("/state")
async def state(request: Request):
    return {"greeting": request.state.greeting}


@app.get("/stream")
async def stream(n: int = 3):
    async def chunks():
        for i in range(n):
            yield f"chunk {i}\n"
            await asyncio.sleep(0)

    return StreamingResponse(chunks(), media_type="text/plain")


@app.websocket("/ws")
async def ws_echo(websocket: WebSocket):
    await websocket.accept()
    try:
        while True:
            text = await websocket.receive_text()
            await websocket.send_text(f"echo: {text}")
    except WebSocketDisconnect:
        pass
