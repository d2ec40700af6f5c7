import django.db.models.deletion
import uuid
from django.db import migrations, models


def move_content_type(apps, schema_editor, old='inference', new='jobs'):
    # The content type row carries the permissions given to staff (view_job, cancel_job)
    # and the admin log's entries: relabelled, they keep pointing at the same jobs.
    ContentType = apps.get_model('contenttypes', 'ContentType')
    ContentType.objects.using(schema_editor.connection.alias).filter(app_label=old, model='job').update(app_label=new)


def move_content_type_back(apps, schema_editor):
    move_content_type(apps, schema_editor, old='jobs', new='inference')


class Migration(migrations.Migration):
    """Job arrives from the app labelled ``inference`` (inference.0010) without a table
    being touched: ``inference_job`` keeps its rows, indexes and constraints."""

    initial = True

    dependencies = [
        ('inference', '0010_job_moves_to_jobs'),
        ('key_sessions', '0004_suspension'),
        ('keys', '0003_api_client_verbose_name'),
        ('contenttypes', '0002_remove_content_type_name'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name='Job',
                    fields=[
                        ('id', models.UUIDField(default=uuid.uuid4, editable=False, primary_key=True, serialize=False)),
                        ('status', models.CharField(choices=[('queued', 'Queued'), ('running', 'Running'), ('succeeded', 'Succeeded'), ('failed', 'Failed'), ('cancelled', 'Cancelled')], db_index=True, default='queued', max_length=16)),
                        ('input_count', models.PositiveIntegerField()),
                        ('inputs_sha256', models.CharField(max_length=64)),
                        ('idempotency_key', models.CharField(blank=True, max_length=200, null=True)),
                        ('attempts', models.PositiveIntegerField(default=0)),
                        ('result_attempt', models.PositiveIntegerField(blank=True, null=True)),
                        ('claim_token', models.CharField(blank=True, max_length=64)),
                        ('enqueued_at', models.DateTimeField(blank=True, null=True)),
                        ('heartbeat_at', models.DateTimeField(blank=True, null=True)),
                        ('submitted_at', models.DateTimeField(auto_now_add=True, db_index=True)),
                        ('started_at', models.DateTimeField(blank=True, null=True)),
                        ('finished_at', models.DateTimeField(blank=True, null=True)),
                        ('error_code', models.CharField(blank=True, max_length=64)),
                        ('error_message', models.TextField(blank=True)),
                        ('blobs_erased', models.BooleanField(default=False)),
                        ('client', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='jobs', to='keys.apiclient')),
                        ('model_version', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='jobs', to='inference.modelversion')),
                        ('session', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='jobs', to='key_sessions.keysession')),
                    ],
                    options={
                        'db_table': 'inference_job',
                        'ordering': ['-submitted_at'],
                        'permissions': [('cancel_job', 'Can cancel queued jobs')],
                        'constraints': [models.UniqueConstraint(condition=models.Q(('idempotency_key__isnull', False)), fields=('client', 'idempotency_key'), name='unique_idempotency_key_per_client')],
                    },
                ),
            ],
            database_operations=[],
        ),
        migrations.RunPython(move_content_type, move_content_type_back),
    ]
