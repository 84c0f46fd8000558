import pytest

from mnist_gluon.config import (
    Config,
    bundled_configs,
    config_file,
    config_to_yaml,
    load_config,
)
from mnist_gluon.errors import ConfigError
from mnist_gluon.training.train import fit_short_run
from support import REPO


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_defaults_are_the_documents_mlp_trained_with_adam():
    config = load_config()
    assert (config.model.hidden, config.model.activation, config.model.classes) == (128, "relu", 10)
    assert config.train.optimizer == "adam" and config.data.name == "mnist"


@pytest.mark.parametrize("name", ["base", "best", "fashion", "fashion-best", "smoke"])
def test_shipped_configs_load(name):
    config = load_config(REPO / "configs" / f"{name}.yaml")
    assert isinstance(config, Config)


def test_every_config_in_the_repository_ships_inside_the_package():
    assert bundled_configs() == sorted(p.stem for p in (REPO / "configs").glob("*.yaml"))
    assert config_file("best").read_text() == (REPO / "configs" / "best.yaml").read_text()


def test_a_config_name_means_the_bundled_file_and_a_path_means_a_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "base").mkdir()  # a run folder named like the config is not a config
    assert config_file("base").name == "base.yaml" and config_file("base").is_file()
    (tmp_path / "base").rmdir()
    (tmp_path / "base").write_text("seed: 1\n")  # a file of that name in the folder wins
    assert config_file("base") == tmp_path.joinpath("base").relative_to(tmp_path)
    assert load_config(config_file("base")).seed == 1
    with pytest.raises(ConfigError, match="config file base.yaml does not exist"):
        load_config(config_file("base.yaml"))  # a path is never looked up among the bundled
    with pytest.raises(ConfigError, match="no bundled config of that name; pass a YAML file "
                                          "or one of base, best, distilled, fashion, fashion-best, "
                                          "fashion-distilled, fashion-lenet, lenet, lenet-pruned, "
                                          "private, private-lenet, pruned, smoke"):
        config_file("bsae")


def test_a_warmup_as_long_as_the_run_is_cut_to_half_the_run_and_said():
    config = load_config(config_file("base"), ["train.epochs=1"])
    assert fit_short_run(config) == ["train.warmup_epochs=1 does not fit a 1-epoch run; "
                                     "warming up for 0.5 epochs instead"]
    assert config.train.warmup_epochs == 0.5
    unchanged = load_config(config_file("base"))
    assert fit_short_run(unchanged) == [] and unchanged.train.warmup_epochs == 1


def test_a_weight_average_starting_after_a_short_run_starts_halfway_and_is_said():
    """`--config best --set train.epochs=1` was refused: its averaging starts at epoch 120."""
    config = load_config(config_file("best"), ["train.epochs=4"])
    start = load_config(config_file("best")).train.average.start_epoch
    assert f"train.average.start_epoch={start} does not fit a 4-epoch run; averaging the " \
           "weights from epoch 3 instead" in fit_short_run(config)
    assert config.train.average.start_epoch == 3


def test_base_config_trains_ten_epochs_on_mnist():
    config = load_config(REPO / "configs" / "base.yaml")
    assert (config.data.name, config.train.epochs, config.model.hidden) == ("mnist", 10, 128)


def test_fashion_config_uses_fashion_mnist():
    assert load_config(REPO / "configs" / "fashion.yaml").data.name == "fashion-mnist"


def test_file_values_override_defaults_and_sets_override_the_file(tmp_path):
    path = write(tmp_path, "train: {lr: 0.01, epochs: 3}\n")
    config = load_config(path, ["train.lr=0.05", "model.hidden=256", "train.clip_gradient=null"])
    assert config.train.lr == 0.05
    assert config.train.epochs == 3
    assert config.model.hidden == 256
    assert config.train.clip_gradient is None
    assert config.train.batch_size == 64  # untouched default


def test_integer_is_accepted_where_a_float_is_expected():
    assert load_config(overrides=["train.lr=1"]).train.lr == 1.0


def test_list_override_is_read_as_yaml():
    assert load_config(overrides=["train.lr_step_epochs=[3,6]",
                                  "train.lr_schedule=step"]).train.lr_step_epochs == [3, 6]


def test_unknown_config_key_names_the_closest_known_key(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config key train\.batchsize; did you mean "
                                          r"train\.batch_size\?"):
        load_config(overrides=["train.batchsize=32"])
    with pytest.raises(ConfigError, match=r"unknown config key trian.*did you mean train\?"):
        load_config(write(tmp_path, "trian: {lr: 0.1}\n"))


def test_a_key_named_as_other_tools_name_it_points_at_ours():
    with pytest.raises(ConfigError, match=r"train\.learning_rate; did you mean train\.lr\?"):
        load_config(overrides=["train.learning_rate=0.1"])


def test_unknown_key_without_a_close_match_lists_the_known_keys():
    with pytest.raises(ConfigError, match=r"model\.qqqqq.*known keys: model\.kind, model\.hidden"):
        load_config(overrides=["model.qqqqq=1"])


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.batch_size=abc", r"train\.batch_size must be an integer, got 'abc'"),
        ("train.batch_size=1.5", r"train\.batch_size must be an integer"),
        ("train.lr=fast", r"train\.lr must be a finite number"),
        ("data.download=maybe", r"data\.download must be true or false"),
        ("train.epochs=true", r"train\.epochs must be an integer"),
        ("model.activation=3", r"model\.activation must be a string"),
        ("train.lr_step_epochs=3", r"train\.lr_step_epochs must be a list"),
    ],
)
def test_wrong_type_names_the_key_and_the_type(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=[override])


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.batch_size=0", r"train\.batch_size is 0; it must be in \[1, 65536\]"),
        ("train.lr=-0.1", r"train\.lr is -0\.1; it must be a finite number greater than 0"),
        ("train.epochs=0", r"train\.epochs is 0"),
        ("train.momentum=1.5", r"train\.momentum .* in \[0, 1\)"),
        ("train.optimizer=adamw", r"train\.optimizer is 'adamw'; choose one of sgd, nag, adam, "
                                  r"rmsprop \(did you mean adam\?\)"),
        ("train.lr_schedule=linear", r"choose one of none, step, cosine"),
        ("model.activation=gelu", r"model\.activation .*relu"),
        ("data.name=cifar10", r"data\.name is 'cifar10'; choose one of mnist, fashion-mnist"),
        ("data.val_size=-1", r"data\.val_size"),
        ("model.hidden=0", r"model\.hidden"),
        ("train.warmup_epochs=-1", r"train\.warmup_epochs is -1\.0; it must be 0 or more"),
        ("device=tpu", r"device is 'tpu'; use one of auto, cpu, gpu"),
        ("checkpoint.keep=-1", r"checkpoint\.keep"),
        ("train.clip_gradient=0", r"train\.clip_gradient"),
        ("data.mirrors=[ftp://x/]", r"data\.mirrors"),
    ],
)
def test_out_of_range_value_names_the_key_and_the_allowed_values(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=[override])


def test_malformed_yaml_names_the_file_and_line(tmp_path):
    path = write(tmp_path, "train:\n  lr: [0.1\n  epochs: 3\n")
    with pytest.raises(ConfigError, match=r"c\.yaml is not valid YAML at line \d"):
        load_config(path)


def test_config_that_is_not_a_mapping_is_rejected(tmp_path):
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(write(tmp_path, "- 1\n- 2\n"))


def test_section_given_a_value_is_rejected(tmp_path):
    with pytest.raises(ConfigError, match="train must be a mapping"):
        load_config(write(tmp_path, "train: 3\n"))


def test_missing_config_file_says_so(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.yaml does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_override_without_equals_is_rejected():
    with pytest.raises(ConfigError, match="is not KEY=VALUE"):
        load_config(overrides=["train.lr"])


def test_printed_config_loads_back_to_the_same_config(tmp_path):
    config = load_config(overrides=["train.lr=0.02", "data.mirrors=[http://127.0.0.1/x/]"])
    path = write(tmp_path, config_to_yaml(config))
    assert load_config(path) == config


def test_exponent_notation_without_a_dot_is_a_number():
    # YAML 1.1 reads 1e-3 as a string; users write learning rates that way.
    assert load_config(None, ["train.lr=1e-3"]).train.lr == 0.001
