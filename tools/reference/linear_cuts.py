"""Smaller copies of a torch Linear: some of its output rows, or some of its input columns
(what the fixture scripts use to build pruned reference models)."""
import torch


def cut_rows(linear, rows):
    new = torch.nn.Linear(linear.in_features, len(rows))
    with torch.no_grad():
        new.weight.copy_(linear.weight[rows])
        new.bias.copy_(linear.bias[rows])
    return new


def cut_cols(linear, cols):
    new = torch.nn.Linear(len(cols), linear.out_features)
    with torch.no_grad():
        new.weight.copy_(linear.weight[:, cols])
        new.bias.copy_(linear.bias)
    return new
