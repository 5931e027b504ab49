"""The `warmline` command: serve the app, manage the CRM store and reps, try flows, place an emulated call.

A plain click group: each command builds the app when it needs it (voice/cli/context.py), so `--help` and the
`flows` commands build nothing. `call` and `simulate` load the Twilio emulator when they run, and only they do.
"""

from __future__ import annotations

from pathlib import Path

import click

from voice.cli.admin import crm, db, reps
from voice.cli.console_events import console_events
from voice.cli.context import CommandApp, warmline_parts, with_app
from voice.cli.flows import flows
from voice.cli.serve import serve
from voice.cli.sync import sync


@click.group()
@click.pass_context
def main(ctx: click.Context) -> None:
    """Warmline: the phone front door of a support team."""
    if ctx.obj is None:  # tests hand in their own app (Flask's test_cli_runner passes a ScriptInfo)
        ctx.obj = CommandApp()
        ctx.call_on_close(ctx.obj.close)


main.add_command(serve)
main.add_command(console_events)
main.add_command(db)
main.add_command(crm)
main.add_command(reps)
main.add_command(flows)
crm.add_command(sync)


@main.command("call")
@click.option("--from", "caller", default="+15551230001", show_default=True, help="the caller's number")
@click.option("--to", "called", default="+15550009999", show_default=True, help="the number dialled")
@click.option(
    "--url",
    "base_url",
    default=None,
    help="where the app answers [default: the running `warmline serve`, else WARMLINE_PUBLIC_URL or :5000]",
)
@click.option(
    "--rep",
    "rep_behaviour",
    type=click.Choice(["accepts", "declines", "no-answer"]),
    default="accepts",
    show_default=True,
    help="what every rep does when their phone rings",
)
@click.argument("inputs", nargs=-1)
@with_app
def call(caller: str, called: str, base_url: str | None, rep_behaviour: str, inputs: tuple[str, ...]) -> None:
    """Place an emulated call into the running app and print what the caller and the rep heard.

    INPUTS answer the app's questions in order: words are spoken, `press:N` presses keys, `silence` says nothing.
    """
    from voice.cli.call import place_call  # the emulator: loaded by the two commands that use it, when they run

    place_call(
        warmline_parts(), caller=caller, called=called, base_url=base_url, rep_behaviour=rep_behaviour, inputs=inputs
    )


@main.command("simulate")
@click.option("--from", "caller_number", default="+15551230001", show_default=True, help="the number you call from")
@click.option("--to", "called", default="+15550009999", show_default=True, help="the number you dial")
@click.option(
    "--flow",
    "flow_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="try this flow file instead of the configured default",
)
@click.option(
    "--rep",
    "rep_behaviour",
    type=click.Choice(["accepts", "declines", "no-answer"]),
    default="accepts",
    show_default=True,
    help="what every rep does when their phone rings",
)
@click.option("--mute", is_flag=True, help="only print the prompts, do not speak them")
@with_app
def simulate(caller_number: str, called: str, flow_file: Path | None, rep_behaviour: str, mute: bool) -> None:
    """A terminal phone: call the flow, type what you would say (words, keypad digits, or a .wav file to transcribe,
    empty for silence), hear the prompts, and see the interaction as recorded in the CRM."""
    from voice.cli.simulate import simulate_call  # the emulator, as for `call`

    simulate_call(
        warmline_parts(),
        caller_number=caller_number,
        called=called,
        flow_file=flow_file,
        rep_behaviour=rep_behaviour,
        mute=mute,
    )
