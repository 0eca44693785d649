"""Request bodies (validated strictly) and response shapes (for the OpenAPI description)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CreateDraftBody(_Body):
    """``POST /v1/collab/drafts``"""

    title: StrictStr = Field(min_length=1)
    description: StrictStr = ""


class UpdateDraftBody(_Body):
    """``PATCH /v1/collab/drafts/{id}``: at least one field."""

    title: StrictStr | None = Field(default=None, min_length=1)
    description: StrictStr | None = Field(default=None)


class AppendSegmentBody(_Body):
    """``POST /v1/collab/drafts/{id}/segments``"""

    content: StrictStr = Field(min_length=1)


class PassRingBody(_Body):
    """``POST /v1/collab/drafts/{id}/ring/pass``"""

    to_user_id: StrictStr = Field(min_length=1)


class AddCollaboratorBody(_Body):
    """``POST /v1/collab/drafts/{id}/collaborators``"""

    user_id: StrictStr = Field(min_length=1)
    role: Literal["contributor", "viewer"]


class ChangeRoleBody(_Body):
    """``PATCH /v1/collab/drafts/{id}/collaborators/{user_id}`` (API.md v2)"""

    role: Literal["contributor", "viewer"]


# -- responses (documentation only: the server serialises the domain's values directly) ----


class SegmentModel(BaseModel):
    id: StrictInt
    author_user_id: str
    content: str
    position: int
    created_at: str


class CollaboratorModel(BaseModel):
    user_id: str
    role: Literal["contributor", "viewer"]
    joined_at: str


class RingStateModel(BaseModel):
    current_holder_id: str
    holders_history: list[str]


class DraftStateModel(BaseModel):
    id: str
    title: str
    description: str
    creator_id: str
    collaborators: list[CollaboratorModel]
    segments: list[SegmentModel]
    ring_state: RingStateModel
    seq: int
    created_at: str
    updated_at: str
    archived: bool


class DraftSummaryModel(BaseModel):
    id: str
    title: str
    seq: int
    updated_at: str


class EventModel(BaseModel):
    type: str
    draft_id: str
    seq: int
    ts: str
    user_id: str
    data: dict[str, Any]


class ErrorBody(BaseModel):
    code: str
    message: str
    details: Any = None


class ErrorModel(BaseModel):
    error: ErrorBody
