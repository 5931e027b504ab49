"""What a CRM is sent: a call or a task as the store has it at the moment of sending (never as it was when the row
was written, so a retry after a later change sends the newer record, and one send covers every change before it).

Plain values, read from the models once; the adapters map them to each CRM's fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from crm_sync.models import Interaction, Outcome, Task

#: A call placed from the work queue is keyed ``task-…`` until it is answered (``Interaction.call_out``).
_PLACED_BY_US = "task-"


@dataclass(frozen=True)
class CallRecord:
    key: str  # the CallSid of the caller's first call: every CRM write of the call is keyed on it
    direction: Literal["inbound", "outbound"]
    started_at: datetime
    ended_at: datetime | None
    duration_seconds: int | None
    customer_number: str  # E.164 when it parsed
    our_number: str | None
    outcome: str | None
    department: str | None
    corrected_department: str | None
    disposition: str | None
    notes: str | None
    summary: str | None
    issue_text: str | None
    transcript: str | None
    transcript_error: str | None
    recording_url: str | None
    hold_seconds: int
    rep_name: str | None
    customer_id: int | None
    customer_name: str | None
    customer_email: str | None
    live_call_sid: str | None

    @property
    def title(self) -> str:
        who = self.customer_name or self.customer_number
        about = self.corrected_department or self.department
        verb = "Call to" if self.direction == "outbound" else "Call from"
        return f"{verb} {who}" + (f" ({about.replace('_', ' ')})" if about else "")

    @property
    def body(self) -> str:
        """Everything a person reading the CRM needs, as plain text: summary, notes, transcript."""
        lines: list[str] = []
        if self.outcome:
            lines.append(
                f"Outcome: {self.outcome}" + (f", disposition: {self.disposition}" if self.disposition else "")
            )
        elif self.disposition:
            lines.append(f"Disposition: {self.disposition}")
        if self.rep_name:
            lines.append(f"Rep: {self.rep_name}")
        if self.issue_text:
            lines.append(f'Caller said: "{self.issue_text}"')
        if self.summary:
            lines.append(f"Summary: {self.summary}")
        if self.corrected_department and self.corrected_department != self.department:
            lines.append(
                f"Routed to {self.department or 'general'}; the right department was {self.corrected_department}"
            )
        if self.hold_seconds:
            lines.append(f"Waited {self.hold_seconds} s in line")
        if self.notes:
            lines.append(f"Notes: {self.notes}")
        if self.transcript:
            lines.append(f'Voicemail transcript: "{self.transcript}"')
        elif self.transcript_error:
            lines.append(f"Voicemail not transcribed ({self.transcript_error}); listen to the recording")
        if self.recording_url:
            lines.append(f"Recording: {self.recording_url}")
        return "\n".join(lines)

    @property
    def answered(self) -> bool:
        return self.outcome in (Outcome.ANSWERED.value, Outcome.CALLBACK.value)

    def as_json(self) -> dict[str, Any]:
        """The generic webhook's ``data``."""
        return {
            "call_sid": self.key,
            "direction": self.direction,
            "started_at": _iso(self.started_at),
            "ended_at": _iso(self.ended_at),
            "duration_seconds": self.duration_seconds,
            "customer_number": self.customer_number,
            "our_number": self.our_number,
            "customer": {"id": self.customer_id, "name": self.customer_name, "email": self.customer_email},
            "outcome": self.outcome,
            "department": self.department,
            "corrected_department": self.corrected_department,
            "disposition": self.disposition,
            "notes": self.notes,
            "summary": self.summary,
            "issue_text": self.issue_text,
            "transcript": self.transcript,
            "recording_url": self.recording_url,
            "hold_seconds": self.hold_seconds,
            "rep": self.rep_name,
        }


@dataclass(frozen=True)
class TaskRecord:
    key: str  # the call's CallSid and the task's id: unique across installations, stable across retries
    call_key: str
    kind: str
    subject: str
    note: str
    open: bool
    created_at: datetime
    due_at: datetime | None
    closed_at: datetime | None
    close_note: str | None
    department: str | None
    customer_number: str
    customer_id: int | None
    customer_name: str | None
    customer_email: str | None

    @property
    def body(self) -> str:
        return self.note + (f"\nDone: {self.close_note}" if self.close_note else "")

    def as_json(self) -> dict[str, Any]:
        return {
            "task_id": self.key,
            "call_sid": self.call_key,
            "kind": self.kind,
            "subject": self.subject,
            "note": self.note,
            "open": self.open,
            "created_at": _iso(self.created_at),
            "due_at": _iso(self.due_at),
            "closed_at": _iso(self.closed_at),
            "close_note": self.close_note,
            "department": self.department,
            "customer_number": self.customer_number,
            "customer": {"id": self.customer_id, "name": self.customer_name, "email": self.customer_email},
        }


def call_record(interaction: Interaction) -> CallRecord:
    customer = interaction.customer
    return CallRecord(
        key=interaction.call_sid,
        direction="outbound" if interaction.call_sid.startswith(_PLACED_BY_US) else "inbound",
        started_at=interaction.started_at,
        ended_at=interaction.ended_at,
        duration_seconds=interaction.duration_seconds,
        customer_number=interaction.caller_number,
        our_number=interaction.called_number,
        outcome=interaction.outcome.value if interaction.outcome is not None else None,
        department=interaction.department,
        corrected_department=interaction.corrected_department,
        disposition=interaction.disposition,
        notes=interaction.wrap_up_notes,
        summary=interaction.summary,
        issue_text=interaction.issue_text,
        transcript=interaction.transcript,
        transcript_error=interaction.transcript_error,
        recording_url=interaction.recording_url,
        hold_seconds=interaction.hold_seconds or 0,
        rep_name=interaction.rep.name if interaction.rep is not None else None,
        customer_id=interaction.customer_id,
        customer_name=customer.name if customer is not None else None,
        customer_email=customer.email if customer is not None else None,
        live_call_sid=interaction.live_call_sid,
    )


_TASK_SUBJECTS = {"voicemail": "Return voicemail", "callback": "Call back"}


def task_record(task: Task, interaction: Interaction) -> TaskRecord:
    customer = task.customer
    who = customer.name if customer is not None else interaction.caller_number
    return TaskRecord(
        key=f"{interaction.call_sid}-task-{task.id}",
        call_key=interaction.call_sid,
        kind=task.kind,
        subject=f"{_TASK_SUBJECTS.get(task.kind, 'Follow up')}: {who}",
        note=task.note,
        open=task.open,
        created_at=task.created_at,
        due_at=task.due_at,
        closed_at=task.closed_at,
        close_note=task.close_note,
        department=task.department,
        customer_number=interaction.caller_number,
        customer_id=task.customer_id,
        customer_name=customer.name if customer is not None else None,
        customer_email=customer.email if customer is not None else None,
    )


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None
