"""HTTP adapters: one router per resource. Routes translate HTTP; the logic lives below."""

from fastapi import APIRouter

from service.api import datasets, health, jobs, models, predict

api_router = APIRouter()
api_router.include_router(health.router)
api_router.include_router(datasets.router)
api_router.include_router(jobs.router)
api_router.include_router(models.router)
api_router.include_router(predict.router)
