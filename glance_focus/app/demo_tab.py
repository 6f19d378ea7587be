"""The "Ask a question" tab: video, question, options, model and frames in; the answer, the event
timeline, the evidence (what the answer rests on, and a time range to hide), the memory-prompt
attention and the timings out; cached examples under the inputs; and, when the server offers
several models, a compare mode (:mod:`~glance_focus.app.compare`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gradio as gr
from matplotlib.figure import Figure

from glance_focus.app.answering import Answerer
from glance_focus.app.compare import Comparer
from glance_focus.app.examples import Example, examples_cache_folder, examples_cache_key, examples_cache_root
from glance_focus.app.messages import frame_control, model_summary, timings_markdown
from glance_focus.app.models import Models
from glance_focus.app.settings import EXAMPLES_PER_PAGE, FRAMES_RANGE, MAX_UPLOAD_BYTES, REPO_ROOT, VIDEO_LIMITS
from glance_focus.app.uploads import uploaded_file_input
from glance_focus.checkpoint import CONFIG_NAME
from glance_focus.evidence import Evidence
from glance_focus.pipeline import MAX_OPTIONS, MAX_QUESTION_CHARS
from glance_focus.plots import attention_figure, evidence_figure, timeline_figure


def hidden_probabilities(evidence: Evidence) -> dict[str, float] | None:
    """The answer's probabilities without the hidden stretch (for a ``gr.Label``), or None."""
    if evidence.hidden is None:
        return None
    return dict(zip(evidence.choices, evidence.hidden.probabilities, strict=True))


def build_demo_tab(models: Models, examples: Sequence[Example]) -> None:
    """The question-answering tab (call inside a ``gr.Tab``)."""
    answerer = Answerer(models)
    default = models.choices.get(models.default) if models.default else None
    default_control = frame_control(default.info if default else None)
    default_frames = default_control["value"]

    def answer_fn(
        video_path: str | None,
        question_text: str,
        options_text: str,
        model_name: str | None,
        frames: float,
        progress: gr.Progress = gr.Progress(),  # noqa: B008 (gradio's way to ask for progress)
    ) -> tuple[Any, ...]:
        """Answer from the page: label, figures, timings, the API's JSON, the evidence (sentence,
        figure), the time range to hide preset to the strongest evidence's span, no hidden result yet."""
        prediction = answerer(model_name, video_path, question_text, options_text, frames, progress)
        progress(0.8, desc="Answering again without each memory prompt…")
        evidence = answerer.evidence(model_name, video_path, question_text, options_text, frames)
        progress(0.9, desc="Drawing the timeline, evidence and attention…")
        probabilities = dict(zip(prediction.options, prediction.probabilities, strict=True))
        strongest = evidence.strongest
        return (
            probabilities,
            timeline_figure(prediction),
            attention_figure(prediction),
            timings_markdown(prediction, models.device, clips=is_clip_model(model_name)),
            prediction.to_json(),
            evidence.sentence(),
            evidence_figure(evidence),
            round(min(strongest.start_s, strongest.end_s), 1),
            round(max(strongest.start_s, strongest.end_s), 1),
            None,
            "",
        )

    def hide_fn(
        video_path: str | None,
        question_text: str,
        options_text: str,
        model_name: str | None,
        frames: float,
        start_s: float | None,
        end_s: float | None,
    ) -> tuple[dict[str, float] | None, str, Figure]:
        """Answer again without the frames of ``[start_s, end_s]``: its probabilities, a sentence, the evidence."""
        evidence = answerer.evidence(model_name, video_path, question_text, options_text, frames, hide=(start_s, end_s))
        return hidden_probabilities(evidence), evidence.hidden_sentence() or "", evidence_figure(evidence)

    def is_clip_model(name: str | None) -> bool:
        choice = models.choices.get(name) if name else None
        return choice is not None and choice.info.sampling.is_clips

    # Outputs are created first (unrendered) so that the examples, which need them, can sit under the inputs.
    answer = gr.Label(
        label="Answer and option probabilities", num_top_classes=MAX_OPTIONS, elem_id="answer", render=False
    )
    timings = gr.Markdown(elem_id="timings", render=False)
    result_json = gr.JSON(show_label=False, render=False)
    timeline = gr.Plot(label="Event timeline", format="png", elem_id="timeline", render=False)
    attention = gr.Plot(label="Memory-prompt attention", format="png", elem_id="attention", render=False)
    evidence_sentence = gr.Markdown(elem_id="evidence-sentence", render=False)
    evidence_plot = gr.Plot(label="Evidence", format="png", elem_id="evidence", render=False)
    hide_start = gr.Number(label="Hide from (s)", minimum=0, elem_id="hide-start", render=False)
    hide_end = gr.Number(label="to (s)", minimum=0, elem_id="hide-end", render=False)
    hidden_answer = gr.Label(
        label="Answer without that stretch", num_top_classes=MAX_OPTIONS, elem_id="hidden-answer", render=False
    )
    hidden_sentence = gr.Markdown(elem_id="hidden-sentence", render=False)
    evidence_outputs = [evidence_sentence, evidence_plot, hide_start, hide_end, hidden_answer, hidden_sentence]
    outputs = [answer, timeline, attention, timings, result_json, *evidence_outputs]

    with gr.Row(equal_height=False):
        with gr.Column(scale=5, min_width=360):
            # Any file is accepted (a video player's upload box refuses files whose type the browser
            # does not call video, e.g. many .ts or extension-less files); the player only previews.
            video = uploaded_file_input("Video (any format)", height=120, elem_id="video")
            gr.Markdown(
                "MP4, WebM, MOV, MKV, AVI, MPEG, MPEG-TS, 3GP, … — any file a video decoder reads; at most "
                f"{MAX_UPLOAD_BYTES // 10**6} MB and {VIDEO_LIMITS.max_duration_s / 60:g} minutes.",
                elem_classes="figure-help",
            )
            preview = gr.Video(label="Preview", interactive=False, height=260, visible=False, elem_id="video-preview")
            question = gr.Textbox(
                label="Question",
                placeholder="e.g. What happened right after the object turned red?",
                max_length=MAX_QUESTION_CHARS,
                elem_id="question",
            )
            options = gr.Textbox(
                label="Answer options, one per line",
                placeholder="The object grew.\nThe object shrank.\nA blue object appeared.",
                info=f"Multiple-choice models pick one (2 to {MAX_OPTIONS}); leave empty for an open-ended model.",
                lines=4,
                max_lines=MAX_OPTIONS,
                interactive=not (default and default.info.model.task == "open_ended"),
                elem_id="options",
            )
            with gr.Row():
                model = gr.Dropdown(
                    choices=list(models.choices),
                    value=models.default,
                    label="Model",
                    interactive=len(models.choices) > 1,
                    scale=2,
                )
                num_frames = gr.Slider(*FRAMES_RANGE, step=1, scale=2, elem_id="frames", **default_control)
            submit = gr.Button("Answer", variant="primary", elem_id="submit")
            inputs = [video, question, options, model, num_frames]
            if examples and default is not None:
                files = [default.path / CONFIG_NAME, *default.path.glob("*.safetensors"), *(e.video for e in examples)]
                files += [*Path(__file__).parent.glob("*.py"), REPO_ROOT / "glance_focus" / "plots.py"]
                files.append(REPO_ROOT / "glance_focus" / "evidence.py")
                folder = examples_cache_root() / examples_cache_key(files, examples)
                with examples_cache_folder(folder):
                    gr.Examples(
                        examples=[
                            [str(e.video), e.question, "\n".join(e.options), default.name, default_frames]
                            for e in examples
                        ],
                        inputs=inputs,
                        outputs=outputs,
                        fn=answer_fn,
                        cache_examples=True,
                        cache_mode="lazy",
                        visible_columns=[0, 1],
                        label="Examples from the synthetic world (results are cached after the first click)",
                        api_visibility="private",
                        examples_per_page=EXAMPLES_PER_PAGE,
                        elem_id="examples",
                    )

        with gr.Column(scale=6, min_width=360):
            answer.render()
            timings.render()
            with gr.Accordion("Result as JSON (what the API returns)", open=False):
                result_json.render()
            about = gr.Markdown(model_summary(default), elem_id="model-summary")
            with gr.Accordion("Model card", open=False, visible=bool(default and default.card)) as card_box:
                card = gr.Markdown(default.card if default and default.card else "")

    timeline.render()
    gr.Markdown(
        "One row per memory prompt, in temporal order: the span it predicts, coloured by event class, with "
        "the class and its probability; grey dashed rows predict *background* (no event). Thumbnails show the "
        "sampled frames at their times.",
        elem_classes="figure-help",
    )
    with gr.Group(elem_id="evidence-panel"):
        gr.Markdown("### Evidence: what the answer rests on")
        evidence_sentence.render()
        evidence_plot.render()
        gr.Markdown(
            "Same rows as the timeline: the model answered again with each memory prompt left out. A red bar "
            "is how much the answer's probability falls without that prompt (the answer rests on it), a blue "
            "bar how much it rises; the right column names the answer the model switches to, if any. Hide a "
            "stretch of the video (its frames are left out of both stages) to see the answer without it.",
            elem_classes="figure-help",
        )
        with gr.Row(equal_height=True):
            hide_start.render()
            hide_end.render()
            hide_button = gr.Button("Hide this stretch and answer again", elem_id="hide-button")
        hidden_answer.render()
        hidden_sentence.render()
    attention.render()
    gr.Markdown(
        "Same rows and time axis as the timeline. Left: where each memory prompt looked while glancing "
        "(its predicted span underlined). Right: which memory prompts each word of the question and answer "
        "selected (for a model imported from the reference code: which of the text's last positions, as the "
        "rows' labels say). Bottom: where the answer query looked. Focus maps come from the decoder layer the "
        "answer is read from.",
        elem_classes="figure-help",
    )

    other_models = [name for name in models.choices if name != models.default]
    with gr.Accordion("Compare two models", open=True, visible=bool(other_models), elem_id="compare-box"):
        gr.Markdown(
            "The model chosen above and a second one answer the same video and question: both answers, "
            "each option's probability under each model, and both event timelines on one time axis.",
            elem_classes="figure-help",
        )
        with gr.Row():
            compare_model = gr.Dropdown(
                choices=list(models.choices),
                value=other_models[0] if other_models else None,
                label="Compare with",
                elem_id="compare-model",
                scale=3,
            )
            compare_button = gr.Button("Compare", elem_id="compare-submit", scale=1)
        with gr.Row(equal_height=False):
            compare_summary = gr.Markdown(elem_id="compare-summary")
            compare_table = gr.Dataframe(
                headers=["option", "model A", "model B", "chosen by"],
                interactive=False,
                label="Option probabilities under each model",
                elem_id="compare-table",
            )
        compare_plot = gr.Plot(label="Both event timelines", format="png", elem_id="compare-timeline")
    comparer = Comparer(answerer)

    def compare_fn(
        video_path: str | None,
        question_text: str,
        options_text: str,
        model_a: str | None,
        model_b: str | None,
        frames: float,
        progress: gr.Progress = gr.Progress(),  # noqa: B008 (gradio's way to ask for progress)
    ) -> tuple[str, dict[str, Any], Figure]:
        return comparer(video_path, question_text, options_text, model_a, model_b, frames, progress)

    compare_button.click(
        compare_fn,
        inputs=[video, question, options, model, compare_model, num_frames],
        outputs=[compare_summary, compare_table, compare_plot],
        api_visibility="private",
        concurrency_id="inference",
    )

    gr.on(
        [submit.click, question.submit],
        answer_fn,
        inputs=inputs,
        outputs=outputs,
        api_visibility="private",
        concurrency_id="inference",
    )

    hide_button.click(
        hide_fn,
        inputs=[*inputs, hide_start, hide_end],
        outputs=[hidden_answer, hidden_sentence, evidence_plot],
        api_visibility="private",
        concurrency_id="inference",
    )

    def select_model(name: str | None) -> tuple[str, dict, dict, dict, str]:
        """Describe the chosen model; set the options box and the frames control to suit it (a frame
        count, or for a clip model the seconds of video it reads)."""
        choice = models.choices.get(name) if name else None
        if choice is None:
            return model_summary(None), gr.update(), gr.update(), gr.update(visible=False), ""
        open_ended = choice.info.model.task == "open_ended"
        options_update = gr.update(value="", interactive=False) if open_ended else gr.update(interactive=True)
        return (
            model_summary(choice),
            options_update,
            gr.update(**frame_control(choice.info)),
            gr.update(visible=choice.card is not None),
            choice.card or "",
        )

    def show_preview(path: str | None) -> dict[str, Any]:
        """The uploaded file in the player (browsers play some formats only; the answer needs none)."""
        return gr.update(value=path, visible=path is not None)

    video.change(show_preview, video, preview, api_visibility="private", queue=False)

    model.change(
        select_model,
        inputs=model,
        outputs=[about, options, num_frames, card_box, card],
        api_visibility="private",
        queue=False,
    )
