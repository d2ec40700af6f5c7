from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('ops', '0004_rechain_audit_log'),
    ]

    operations = [
        migrations.AlterField(
            model_name='auditrecord',
            name='seq',
            field=models.PositiveBigIntegerField(unique=True),
        ),
    ]
