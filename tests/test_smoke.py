from tegaki.spec import load_preset


def test_lenet_run_is_accurate(lenet_run, cli):
    r = cli("evaluate", lenet_run)
    assert r.code == 0, r.err
    acc = float(r.out.split("accuracy ")[1].split("%")[0])
    assert acc > 95.0


def test_presets_have_expected_parameter_counts():
    # LeNet: 20*25+20 + 50*20*25+50 + 800*500+500 + 500*10+10
    assert load_preset("lenet").num_params() == 520 + 25050 + 400500 + 5010
    assert load_preset("ffnn").num_params() == 784 * 100 + 100 + 100 * 10 + 10
