from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("inference", "0011_model_constant_keys"),
    ]

    operations = [
        migrations.AddField(
            model_name="modelversion",
            name="first_run_ms",
            field=models.FloatField(default=0.0),
        ),
        migrations.AddField(
            model_name="modelversion",
            name="warm_run_ms",
            field=models.FloatField(default=0.0),
        ),
    ]
