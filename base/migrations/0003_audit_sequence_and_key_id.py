from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('ops', '0002_admin_permissions'),
    ]

    operations = [
        migrations.AlterModelOptions(
            name='auditrecord',
            options={'ordering': ['seq'], 'permissions': [('export_auditrecord', 'Can export the audit log')]},
        ),
        migrations.AddField(
            model_name='auditrecord',
            name='seq',
            field=models.PositiveBigIntegerField(null=True),
        ),
        migrations.AddField(
            model_name='auditrecord',
            name='key_id',
            field=models.CharField(default='', max_length=32),
            preserve_default=False,
        ),
    ]
