"""Prompt lines as the release writes them: JSON options, per-loop prompts, score suffixes, files."""

from __future__ import annotations

import pytest

from opensora.errors import ConfigError
from opensora.inference.prompts import (
    append_scores,
    parse_prompt,
    prompt_file_stem,
    read_prompt_file,
    split_json,
    split_loop_prompts,
)


def test_json_after_the_prompt_sets_references_and_mask():
    request = parse_prompt('A car on the ocean.{"reference_path": "a.png;b.mp4", "mask_strategy": "0;0,1,0,-1,1"}')
    assert request.text == "A car on the ocean."
    assert request.reference_paths == ["a.png", "b.mp4"]
    assert request.mask_strategy == "0;0,1,0,-1,1"
    # JSON wins over the per-prompt defaults; without JSON the defaults are used
    assert parse_prompt("x", "c.png", "0").reference_paths == ["c.png"]
    assert parse_prompt('x{"mask_strategy": "0,0,0,0,2"}', "c.png", "0").mask_strategy == "0,0,0,0,2"


def test_braces_inside_text_are_not_json():
    assert split_json("a {curly} cat") == ("a {curly} cat", {})
    assert split_json('say {hi} {"mask_strategy": "0"}') == ("say {hi}", {"mask_strategy": "0"})
    with pytest.raises(ConfigError, match="no valid JSON"):
        split_json("a cat {not json}")
    with pytest.raises(ConfigError, match="unknown key"):
        split_json('a cat{"reference": "x.png"}')


def test_per_loop_prompts_hold_until_the_next_index():
    texts = split_loop_prompts("|0|a cat |2|a dog")
    assert texts == {0: "a cat", 2: "a dog"}
    request = parse_prompt("|0|a cat |2|a dog")
    assert [request.text_for_loop(i) for i in range(4)] == ["a cat", "a cat", "a dog", "a dog"]
    assert split_loop_prompts("plain text") == {0: "plain text"}
    with pytest.raises(ConfigError, match="loop 0"):
        split_loop_prompts("|1|a dog")


def test_scores_are_appended_once():
    text = append_scores("a cat.", 6.5, 4, "pan left")
    assert text == "a cat. aesthetic score: 6.5. motion score: 4.0. camera motion: pan left."
    assert append_scores(text, 5.0, 2.0, "static") == text
    assert append_scores("a cat.", None, None, None) == "a cat."


def test_prompt_files_txt_and_csv(tmp_path):
    (tmp_path / "p.txt").write_text("first\n\n second \n")
    assert read_prompt_file(tmp_path / "p.txt") == ["first", "second"]
    (tmp_path / "p.csv").write_text('path,text\nx.mp4,"a, b"\ny.mp4,c\n')
    assert read_prompt_file(tmp_path / "p.csv") == ["a, b", "c"]
    (tmp_path / "bad.csv").write_text("path,caption\nx,y\n")
    with pytest.raises(ConfigError, match="'text' column"):
        read_prompt_file(tmp_path / "bad.csv")
    with pytest.raises(ConfigError, match="does not exist"):
        read_prompt_file(tmp_path / "none.txt")


def test_prompt_file_stem_is_a_safe_name():
    assert prompt_file_stem("a/b: c?") == "a_b_ c"
    assert len(prompt_file_stem("x" * 300)) == 100
