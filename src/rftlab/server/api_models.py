"""Models: the LoRA adapters jobs write (kind HF_PEFT_ADDON): list, get, delete."""

from __future__ import annotations

from fastapi import APIRouter

from rftlab.server.resource_routes import ORDER_COLUMNS, add_list_get_delete

router = APIRouter(prefix="/v1/accounts/{account_id}")
add_list_get_delete(
    router,
    "models",
    "model",
    ORDER_COLUMNS,
    lambda layout, account_id, model_id: layout.model_dir(account_id, model_id),
)
