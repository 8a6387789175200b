"""Apps: a YAML file that names registries and supervisors, started and stopped as one
(``app``), their live status (``status``), the demo (``demo``) and example child classes
(``examples``)."""
