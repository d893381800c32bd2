"""Every kind of bad input: exit code 2, one clear message, nothing on stdout."""

from __future__ import annotations

import re

import pytest

from framework.cli import main


def run_eval(capsys: pytest.CaptureFixture[str], path, *extra: str) -> tuple[int, str, str]:
    code = main(["eval", str(path), *extra])
    out, err = capsys.readouterr()
    return code, out, err


def assert_user_error(capsys, path, pattern: str) -> str:
    code, out, err = run_eval(capsys, path)
    assert code == 2
    assert out == ""
    assert err.startswith("cimages: error: ")
    assert len(err.strip().splitlines()) == 1, err
    assert re.search(pattern, err), err
    return err


def test_malformed_yaml_names_file_line_and_column(write, capsys):
    path = write("bad.yaml", "image:\n  name: [unclosed\n  tag: x\n")
    assert_user_error(capsys, path, r"bad\.yaml:3:6: malformed YAML")


def test_unknown_option_suggests_the_close_one(write, capsys):
    path = write("typo.yaml", "image:\n  nmae: hello\n")
    assert_user_error(
        capsys, path, r"typo\.yaml:2:9: unknown option `image\.nmae`; did you mean `image\.name`\?"
    )


def test_unknown_top_level_option_lists_what_exists(write, capsys):
    path = write("top.yaml", "image: {name: a}\nservicez: {}\n")
    assert_user_error(capsys, path, r"unknown option `servicez`; did you mean `services`")


def test_wrong_type_says_expected_and_got(write, capsys):
    path = write("type.yaml", "image:\n  name: a\n  maxLayers: lots\n")
    assert_user_error(
        capsys, path, r"type\.yaml:3:14: option `image\.maxLayers` expects an integer "
        r"between 2 and 125, got a string 'lots'"
    )


def test_wrong_type_inside_a_list(write, capsys):
    path = write("list.yaml", "image: {name: a}\nenvironment:\n  systemPackages: [hello, 3]\n")
    assert_user_error(
        capsys, path, r"list\.yaml:3:27: option `environment\.systemPackages\[1\]` expects a "
        r"Debian package name"
    )


def test_conflicting_scalars_name_both_files_and_lines(write, capsys):
    write("a.yaml", "image:\n  name: one\n")
    path = write("b.yaml", "imports: [a.yaml]\nimage:\n  name: two\n")
    assert_user_error(
        capsys, path, r"conflicting values for option `image\.name`: 'one' at .*a\.yaml:2:9 "
        r"and 'two' at .*b\.yaml:3:9; tag one of them !default"
    )


def test_import_cycle_shows_the_cycle(write, capsys):
    write("a.yaml", "imports: [b.yaml]\n")
    write("b.yaml", "imports: [c.yaml]\n")
    write("c.yaml", "imports: [a.yaml]\n")
    path = write("top.yaml", "imports: [a.yaml]\nimage: {name: x}\n")
    assert_user_error(
        capsys, path, r"import cycle: \S*a\.yaml -> \S*b\.yaml -> \S*c\.yaml -> \S*a\.yaml"
    )


def test_missing_import_names_the_importing_line(write, capsys):
    path = write("top.yaml", "image: {name: x}\nimports:\n  - ./nowhere.yaml\n")
    assert_user_error(
        capsys, path, r"top\.yaml:3:5: imported file \S*nowhere\.yaml does not exist"
    )


def test_missing_image_name(write, capsys):
    path = write("noname.yaml", "environment:\n  systemPackages: [hello]\n")
    assert_user_error(capsys, path, r"required option `image\.name` is not set")


def test_force_on_both_sides(write, capsys):
    write("a.yaml", "image:\n  name: !force one\n")
    path = write("b.yaml", "imports: [a.yaml]\nimage:\n  name: !force two\n")
    assert_user_error(capsys, path, r"`image\.name` is tagged !force twice with different values")


def test_unknown_tag(write, capsys):
    path = write("tag.yaml", "image:\n  name: !forse one\n")
    assert_user_error(capsys, path, r"tag\.yaml:2:9: unknown tag !forse")


def test_unknown_option_path_on_the_command_line(write, capsys):
    path = write("ok.yaml", "image: {name: x}\n")
    code, _, err = run_eval(capsys, path, "--option", "image.nope")
    assert code == 2
    assert "no option `image.nope`" in err


def test_missing_file(tmp_path, capsys):
    assert_user_error(capsys, tmp_path / "absent.yaml", r"absent\.yaml: no such file")


ETC_RULE = "a path relative to /etc"


# Names that become file names, shell words or /etc/passwd fields: each probe that once
# built (and injected commands, accounts or files outside /etc) is refused at evaluation.
@pytest.mark.parametrize(("body", "option", "rule"), [
    ('s6: {services: {"x$(touch /tmp/p)": {script: "true"}}}', "s6.services", "a service name"),
    ('s6: {services: {"a\\nb": {script: "true"}}}', "s6.services", "a service name"),
    ('s6: {services: {"two words": {script: "true"}}}', "s6.services", "a service name"),
    ('s6: {services: {"../../x": {script: "true"}}}', "s6.services", "a service name"),
    ('systemd: {services: {"a;b": {script: "true"}}}', "systemd.services", "a service name"),
    ('users: {users: {"evil:x:0:0::/:/bin/sh": {}}}', "users.users", "an account name"),
    ('users: {groups: {"Root\\n": {}}}', "users.groups", "an account name"),
    ('environment: {etc: {"../../tmp/pwned": {text: x}}}', "environment.etc", ETC_RULE),
    ('environment: {etc: {"../usr/bin/evil": {text: x, mode: "4755"}}}', "environment.etc",
     ETC_RULE),
    ('environment: {etc: {"/etc/passwd": {text: x}}}', "environment.etc", ETC_RULE),
    ('environment: {etc: {"a/./b": {text: x}}}', "environment.etc", ETC_RULE),
    ('s6: {services: {a: {script: "true", environment: {"X;Y": v}}}}', "s6.services.a.environment",
     "an environment variable name"),
])
def test_a_name_that_would_escape_is_refused(write, capsys, body, option, rule):
    path = write("probe.yaml", f"image: {{name: probe}}\n{body}\n")
    err = assert_user_error(capsys, path, re.escape(f"under `{option}` is not {rule}"))
    assert "(e.g. " in err  # the rule comes with a valid example


@pytest.mark.parametrize(("field", "value"), [
    ("description", '"x\\nroot2::0:0::/root:/bin/sh"'),
    ("description", '"a:b"'),
    ("home", '"/home/a:0:0"'),
    ("shell", '"/bin/sh\\nx"'),
    ("group", '"wheel:x"'),
])
def test_account_fields_cannot_add_passwd_lines(write, capsys, field, value):
    path = write("acct.yaml", f"image: {{name: acct}}\nusers: {{users: {{alice: {{{field}: "
                              f"{value}}}}}}}\n")
    assert_user_error(capsys, path, re.escape(f"option `users.users.alice.{field}` expects"))


def test_an_alias_bomb_is_bounded(write, capsys):
    lines = ['a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for level in range(1, 9):
        lines.append(f"{chr(97 + level)}: &{chr(97 + level)} [" +
                     ", ".join([f"*{chr(96 + level)}"] * 9) + "]")
    path = write("bomb.yaml", "image: {name: bomb}\nbomb:\n" +
                 "\n".join("  " + line for line in lines) + "\n")
    assert len(path.read_bytes()) < 1000
    assert_user_error(capsys, path, r"expands to over 100000 values")


def test_a_file_that_is_not_utf8_is_named(tmp_path, capsys):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"image: {name: caf\xe9}\n")
    assert_user_error(capsys, path, r"latin1\.yaml: not UTF-8 text \(byte 0xe9 at offset 17\)")


@pytest.mark.parametrize("source", ["/etc/shadow", "../../etc/shadow", "a/../../x"])
def test_an_etc_source_outside_the_definitions_folder_is_refused(write, capsys, source):
    path = write("src.yaml", f"image: {{name: src}}\nenvironment: {{etc: {{x: {{source: "
                             f"'{source}'}}}}}}\n")
    assert_user_error(capsys, path, r"expects a path relative to the module.*copy a host file")


def test_an_etc_source_symlink_out_of_the_folder_is_refused(write, capsys, tmp_path):
    (tmp_path / "motd").symlink_to("/etc/hostname")
    path = write("link.yaml", "image: {name: link}\nenvironment: {etc: {motd: {source: ./motd}}}\n")
    assert_user_error(capsys, path, r"leads to /etc/hostname, outside .*through a symlink")


def test_a_long_image_name_is_refused(write, capsys):
    path = write("long.yaml", f"image: {{name: {'a' * 300}}}\n")
    assert_user_error(capsys, path, r"expects an image name of up to 128")


@pytest.mark.parametrize("body", [
    'environment: {etc: {motd: {text: x, user: "²"}}}',  # isdigit() but no int: a traceback
    'users: {users: {alice: {description: "a\\x85b"}}}',  # NEL: a line end to some readers
])
def test_what_hypothesis_found_is_refused(write, capsys, body):
    path = write("found.yaml", f"image: {{name: found}}\n{body}\n")
    assert_user_error(capsys, path, r"expects")
