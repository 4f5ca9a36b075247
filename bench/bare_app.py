"""The baseline: a bare FastAPI endpoint, as one would write it by hand around a model."""

from __future__ import annotations

import numpy as np
from fastapi import FastAPI
from pydantic import BaseModel

app = FastAPI()
W = np.array([[0.2599916]], dtype=np.float32)
B = np.array([0.7476537], dtype=np.float32)


class Body(BaseModel):
    x: list[list[float]]


@app.post("/predict")
async def predict(body: Body) -> dict:
    y = np.asarray(body.x, dtype=np.float32) @ W.T + B
    return {"y": y.tolist()}
