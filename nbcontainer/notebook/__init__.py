"""The notebook front end: the %%container magics, the cell runner, streams, variable transfer,
the cgroup meter and the live plot. Only this package and :mod:`nbcontainer.kernel` import
IPython or matplotlib."""
