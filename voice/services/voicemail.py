"""Voicemail: the message is filed on the customer's record with a follow-up task at once, then transcribed in the
background (``voice.adapters.recordings``) and the words added to both."""

from __future__ import annotations

import logging

from crm_sync.models import Task
from crm_sync.phones import mask_phone
from crm_sync.queries import interactions, tasks
from ivr_flows import CallState, Recorded, Transfer, VoicemailNode
from voice.domain.actions import TranscribeVoicemail
from voice.domain.replies import FlowReply, Goodbye, Reply
from voice.services.calls import record_state
from voice.services.context import Service

log = logging.getLogger(__name__)


class VoicemailService(Service):
    def saved(self, call_sid: str, *, recording_url: str, duration_seconds: int) -> Reply:
        """File the message on the customer's record with a follow-up task, now; transcribe it in the background.

        The task and the recording link are committed before any transcription is tried, so a failing engine or
        download can only leave the transcript empty (with the reason), never lose the message.
        """
        with self._store.unit_of_work() as session:
            interaction = interactions.require_interaction(session, call_sid, for_update=True)
            flow = self._flow_of(interaction)
            interaction.voicemail_left(recording_url)
            caller = interaction.customer.name if interaction.customer else mask_phone(interaction.caller_number)
            about = f" about {flow.department_name(interaction.department)}" if interaction.department else ""
            note = f"Return the voicemail from {caller}{about} ({duration_seconds} s): {recording_url}"
            session.add(Task.file(interaction, kind="voicemail", note=note, now=self._clock()))
            log.info("voicemail of %ss on %s filed", duration_seconds, call_sid)
            language = interaction.language or flow.language
            reply: Reply = Goodbye(
                say=(flow.phrase("message_taken", language),), language=language, voice=flow.voice_for(language)
            )
            state = CallState.model_validate(interaction.flow_state)
            if not state.finished and isinstance(flow.nodes.get(state.node), VoicemailNode):
                # The flow asked for this message (a `voicemail` node): it says what comes next.
                recorded = Recorded(recording_url=recording_url, duration_seconds=duration_seconds)
                state, step = self._advance(flow, state, recorded)
                record_state(interaction, state)
                if not isinstance(step.action, Transfer):
                    reply = FlowReply(step)
        if recording_url:
            self._after_commit([TranscribeVoicemail(call_sid, recording_url, flow.name, flow.version)])
        return reply

    def store_transcript(
        self, call_sid: str, *, text: str | None, engine: str, confidence: float | None, error: str | None
    ) -> None:
        """Attach a voicemail's transcript (or why there is none) to the interaction and its open voicemail task."""
        with self._store.unit_of_work() as session:
            interaction = interactions.require_interaction(session, call_sid, for_update=True)
            interaction.record_transcript(text, engine=engine, confidence=confidence, error=error)
            if text:
                heard = f'Transcript ({engine}): "{text}"'
            else:  # the speech said nothing it recognised (no error), or the transcriber failed (its error)
                why = f" ({error})" if error else ""
                heard = f"No transcript{why}; listen to the recording."
            for task in tasks.tasks_for_interaction(session, interaction.id):
                if task.kind == "voicemail" and task.open:
                    task.add_to_note(heard)
