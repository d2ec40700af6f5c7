from django.db import migrations


class Migration(migrations.Migration):
    """Job moves to the app ``jobs`` (jobs.0001_initial), above sessions, while ModelVersion
    stays here below them. Only Django's state changes: the table ``inference_job`` stays as
    it is, with its rows, and jobs.Job keeps using it."""

    dependencies = [
        ('inference', '0009_model_constant_keys_digest'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name='Job')],
            database_operations=[],
        ),
    ]
