"""The whole schema: every package's tables, and the one Alembic history that creates and upgrades them.

Each package owns its tables (storage: conversations, messages, outbox, inbox keys, media; gateway:
sender limits; handoff: work orders, surveys, revisits, opt-outs, agents and their audit log; channels: SMS records, WeChat
tokens). They share storage.base.Base, so importing them here gives Alembic the complete metadata.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import MetaData
from sqlalchemy.engine import make_url

from channels.sms.models import SmsRecord
from channels.wechat.models import WeChatToken
from gateway.models import ApiToken, SenderLimit
from handoff.agents import Agent, AgentAudit
from handoff.models import FollowupCode, Revisit, SmsOptOut, Survey, WorkOrder, WorkOrderEvent
from storage.base import Base
from storage.conversations import Conversation, Message
from storage.inbox import InboxKey
from storage.media import Media
from storage.outbox import OutboxItem

HERE = Path(__file__).resolve().parent
# Every mapped class, by owner; Alembic compares the database with their shared metadata.
MODELS = (
    Conversation, Message, OutboxItem, InboxKey, Media,  # storage
    SenderLimit, ApiToken,  # gateway
    WorkOrder, WorkOrderEvent, FollowupCode, Survey, SmsOptOut, Revisit, Agent, AgentAudit,  # handoff
    SmsRecord, WeChatToken,  # channels
)
METADATA: MetaData = Base.metadata


def alembic_config(url: str) -> Config:
    cfg = Config(str(HERE / "alembic.ini"))
    cfg.set_main_option("script_location", str(HERE / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


async def migrate(url: str) -> None:
    """Upgrade to head; in a thread because Alembic's env runs its own event loop."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    await asyncio.to_thread(command.upgrade, alembic_config(url), "head")
